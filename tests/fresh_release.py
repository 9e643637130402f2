"""The release committed in the repository (results/release/) as a fresh clone has it: its tracked files only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.artifacts.release import MANIFEST, RELEASE_DIR

REPO = Path(__file__).resolve().parents[1]

committed = pytest.mark.skipif(not (REPO / RELEASE_DIR / MANIFEST).is_file(), reason="no committed release")


def fresh_copy(tmp_path: Path) -> Path:
    """The release's committed files copied to ``tmp_path / "release"`` (nothing installed)."""
    tracked = subprocess.run(["git", "ls-files", str(RELEASE_DIR)], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "the release's files are not committed"
    copy = tmp_path / "release"
    for name in tracked:
        target = copy / Path(name).relative_to(RELEASE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, target)
    return copy
