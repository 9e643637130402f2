"""PT2E post-training int8 for the phone formats, with convolution + ReLU6 quantized as one pattern.

The XNNPACK and LiteRT quantizers fuse a convolution with ``relu`` only; ``hardtanh(0, 6)`` (how ReLU6 exports)
*shares* the convolution's output observer, so the int8 grid after every ReLU6 is set by the convolution's range
*before* the clip (often ±20-40 instead of 0-6: a step several times coarser). EfficientNet-Lite uses ReLU6 so that
int8 ranges stay bounded; :func:`clipped_conv_quantizer` annotates each convolution whose only user is a
``hardtanh``/``relu`` with an output observer *after* the clip, as ONNX Runtime's QDQ quantizer and ExecuTorch's Arm
backend do, and leaves every other pattern to the base quantizer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx import GraphModule, Node

log = logging.getLogger(__name__)

_CLIPS = {
    torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default,
    torch.ops.aten.relu.default, torch.ops.aten.relu_.default,
}
_CONVS = {torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default}


def _lower_bound(node: Node) -> float:
    """The clip's lower bound: 0 for relu, ``min_val`` for hardtanh (default -1)."""
    if node.target in (torch.ops.aten.relu.default, torch.ops.aten.relu_.default):
        return 0.0
    return float(node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0))


def annotate_clipped_convs(model: GraphModule, config: Any) -> int:
    """Annotate every conv -> relu/ReLU6 pair in ``model`` with ``config``'s specs (the base quantizer's
    ``QuantizationConfig``: input activation, weight, bias, output activation): the conv's inputs observed, the
    output observed after the clip; both nodes marked so the base annotators skip them. Returns the pairs annotated."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    pairs = 0
    for clip in model.graph.nodes:
        if clip.op != "call_function" or clip.target not in _CLIPS or _lower_bound(clip) != 0.0:
            continue
        conv = clip.args[0]
        if not (isinstance(conv, Node) and conv.op == "call_function" and conv.target in _CONVS
                and len(conv.users) == 1):
            continue  # a conv read elsewhere too keeps its own output observer
        if any(Q_ANNOTATION_KEY in n.meta for n in (conv, clip)):
            continue
        inputs = {conv.args[0]: config.input_activation, conv.args[1]: config.weight}
        if len(conv.args) > 2 and isinstance(conv.args[2], Node) and config.bias is not None:
            inputs[conv.args[2]] = config.bias
        conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clip.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(output_qspec=config.output_activation, _annotated=True)
        pairs += 1
    return pairs


def clipped_conv_quantizer(quantizer: Any) -> Any:
    """``quantizer`` (an XNNPACK or LiteRT PT2E quantizer with its global config set) with conv + ReLU6 annotated
    first (:func:`annotate_clipped_convs`); everything else is still annotated by the quantizer itself."""
    base_annotate = quantizer.annotate

    def annotate(model: GraphModule) -> GraphModule:
        pairs = annotate_clipped_convs(model, quantizer.global_config)
        log.info("int8: %d conv + ReLU6 pairs observed after the clip", pairs)
        return base_annotate(model)

    quantizer.annotate = annotate  # an instance attribute: the quantizer's class (and its type checks) unchanged
    return quantizer


def pt2e_int8(model: nn.Module, *, example: torch.Tensor, calibration: np.ndarray, quantizer: Any,
              fold_quantize: bool = True) -> nn.Module:
    """Post-training int8 through PT2E: prepare with ``quantizer``, observe ``calibration`` one image at a time
    (the mobile graph has a batch of 1), convert (``fold_quantize`` False keeps the fp32 weights with their
    quantize nodes, which LiteRT's converter needs)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    with torch.no_grad():
        for image in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)))
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
