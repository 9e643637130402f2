"""The architecture registry and the pretrained-weights failure message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import ModelError
from core.models import ARCHITECTURES, create_model
from tests.configs import STUDY


def test_registry_has_the_study_architectures() -> None:
    assert set(STUDY) <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", STUDY)
def test_each_architecture_builds_and_runs(name: str) -> None:
    model = create_model(name, pretrained=False).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_unknown_model_lists_allowed() -> None:
    with pytest.raises(ModelError, match="unknown model 'vgg16'; allowed: efficientnet_b0, efficientnet_b4"):
        create_model("vgg16")


@pytest.mark.slow
def test_weights_unavailable_is_a_clear_message(tmp_path: Path) -> None:
    # Offline mode makes the hub fail at once, as it does (after retries) on a machine without network.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-m", "scripts.train", "--model", "test_resnet", "--pretrained",
         "--data-dir", str(tmp_path / "none"), "--output-dir", str(tmp_path / "m"), "--db", str(tmp_path / "r.db")],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not load ImageNet-pretrained weights for test_resnet")
    assert "--no-pretrained" in last
