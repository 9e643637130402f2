"""PT2E int8 with conv + ReLU6 as one pattern (core.compress.pt2e): the int8 grid after a ReLU6 is set by the
clipped range, not by the convolution's range before the clip."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from core.compress.pt2e import clipped_conv_quantizer, pt2e_int8

QUANTIZE = "quantized_decomposed.quantize_per_tensor.default"  # registered by torchao on import
RELU6 = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


class WideConvReLU6(nn.Module):
    """conv -> BN -> ReLU6 whose pre-clip outputs span about ±60: what the conv's own observer would see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6(inplace=True)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv.weight.mul_(40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.bn(self.conv(x)))).mean((2, 3))


def _xnnpack() -> object:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _litert() -> object:
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _int8(quantizer: object) -> tuple[torch.fx.GraphModule, np.ndarray]:
    torch.manual_seed(0)
    model = WideConvReLU6().eval()
    images = np.random.default_rng(0).normal(size=(16, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        assert model.bn(model.conv(torch.from_numpy(images))).abs().max() > 20  # the pre-clip range is wide
    return pt2e_int8(model, example=torch.from_numpy(images[:1]), calibration=images, quantizer=quantizer), images


def _relu6_output_grid(graph_module: torch.fx.GraphModule) -> tuple[float, int]:
    """(scale, zero point) of the int8 tensor a ReLU6 output is stored as."""
    grids = [(float(n.args[1]), int(n.args[2])) for n in graph_module.graph.nodes
             if str(n.target) == QUANTIZE and getattr(n.args[0], "target", None) in RELU6]
    assert len(grids) == 1, grids
    return grids[0]


@pytest.mark.parametrize("base", [_xnnpack, _litert], ids=["xnnpack", "litert"])
def test_relu6_output_is_quantized_on_the_clipped_range(base: Callable[[], object]) -> None:
    clipped, images = _int8(clipped_conv_quantizer(base()))
    scale, zero_point = _relu6_output_grid(clipped)
    assert scale <= 6.0 / 255 * 1.01  # 256 levels over at most [0, 6]
    assert zero_point == -128  # the grid starts at the clip's 0: no level spent on negatives
    # the grid itself holds the values: every dequantized ReLU6 output lies in [0, 6]
    levels = np.arange(-128, 128)
    assert (levels - zero_point).min() * scale == 0 and (levels - zero_point).max() * scale <= 6.0 * 1.01


@pytest.mark.parametrize("base", [_xnnpack, _litert], ids=["xnnpack", "litert"])
def test_the_quantizers_alone_share_the_pre_clip_range(base: Callable[[], object]) -> None:
    """Why the wrapper exists: without it, the ReLU6 output shares the conv's wide observer (this test fails the
    day a quantizer release fuses hardtanh itself, and the wrapper can go)."""
    plain, _ = _int8(base())
    scale, _ = _relu6_output_grid(plain)
    assert scale > 4 * 6.0 / 255


@pytest.mark.slow
def test_clipped_int8_relu6_outputs_are_closer_to_fp32() -> None:
    """The ReLU6 output itself (the model's second stage reads it): rounding error of the int8 graph against fp32."""
    torch.manual_seed(0)
    reference = WideConvReLU6().eval()
    stage = nn.Sequential(reference.conv, reference.bn, reference.act).eval()
    images = np.random.default_rng(0).normal(size=(16, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        want = stage(torch.from_numpy(images)).numpy()
    errors = []
    for quantizer in (clipped_conv_quantizer(_xnnpack()), _xnnpack()):
        int8 = pt2e_int8(stage, example=torch.from_numpy(images[:1]), calibration=images, quantizer=quantizer)
        with torch.no_grad():
            got = np.concatenate([int8(torch.from_numpy(x[None])).numpy() for x in images])
        errors.append(np.abs(got - want).mean())
    assert errors[0] < errors[1] / 2, errors
