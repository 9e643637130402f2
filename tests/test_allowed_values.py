"""Bad settings are refused with an error that names the setting and lists what is allowed (one helper,
core.errors.check_allowed, behind each of these)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.compress.prune import structured_prune
from core.compress.quantize import quantize_onnx
from core.errors import ConfigError
from core.losses import make_criterion
from core.models import create_model
from core.runtime import resolve_device


@pytest.mark.parametrize(("call", "message"), [
    (lambda tmp: resolve_device("tpu"), r"unknown device 'tpu'; allowed: auto, cpu, cuda"),
    (lambda tmp: make_criterion("oversample_everything", np.array([0, 1])),
     r"unknown imbalance mode 'oversample_everything'; allowed: .*balanced_sampler"),
    (lambda tmp: quantize_onnx(tmp / "in.onnx", tmp / "out.onnx", mode="static", method="median"),
     r"unknown calibration method 'median'; allowed: minmax, percentile, entropy"),
    (lambda tmp: quantize_onnx(tmp / "in.onnx", tmp / "out.onnx", mode="static", exclude="everything"),
     r"unknown exclusion preset 'everything'; allowed: .*depthwise"),
    (lambda tmp: structured_prune(create_model("test_resnet", pretrained=False), ratio=0.5,
                                  example_input=torch.randn(1, 3, 32, 32), importance="random"),
     r"unknown pruning importance 'random'; allowed: magnitude, taylor"),
])
def test_an_unknown_value_names_the_setting_and_the_allowed_ones(call, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        call(tmp_path)
