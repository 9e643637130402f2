"""The release format: a folder with ``release.json`` (what it is, where it came from, each file's SHA-256).

Built and installed by :mod:`core.jobs.release`; read here without loading any model code (the site names the
release it serves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ModelError

RELEASE_DIR = Path("results/release")
MANIFEST = "release.json"
RELEASE_FORMAT = "lesionlite-release/1"


class ReleaseError(ModelError):
    """A release that cannot be built, does not match its manifest, or cannot be installed."""


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{path}: not a readable release manifest ({type(exc).__name__})") from None
    if manifest.get("format") != RELEASE_FORMAT:
        raise ReleaseError(f"{path}: format {manifest.get('format')!r}, expected {RELEASE_FORMAT!r}")
    return manifest


def release_description(folder: str | Path) -> str | None:
    """The release's one-sentence description where ``folder`` is a release, else None."""
    return str(read_manifest(folder)["description"]) if (Path(folder) / MANIFEST).is_file() else None
