"""ONNX export (dynamo exporter, TorchScript exporter as fallback), checked against PyTorch after export."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.artifacts.records import ExportCheck

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, path: str | Path, *, input_size: int, opset: int = 18) -> str:
    """Export with a dynamic batch axis into one self-contained file; returns the exporter used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # channels_last weights (from training) make torch.export specialise the batch size
    model.eval()  # not chained: an exported graph's eval() (torchao's) returns None
    model = model.to(memory_format=torch.contiguous_format)
    example = torch.randn(1, 3, input_size, input_size)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter narrates its steps on stdout
            torch.onnx.export(model, (example,), path, dynamo=True, external_data=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
        exporter = "dynamo"
    except Exception as exc:  # the dynamo exporter fails on some graphs; the TorchScript exporter is the fallback
        log.warning("dynamo ONNX export failed (%s: %s); using the TorchScript exporter", type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes)
        exporter = "torchscript"
    onnx.checker.check_model(str(path))
    return exporter


@torch.inference_mode()
def check_export(model: nn.Module, path: str | Path, images: torch.Tensor, *, exporter: str = "") -> ExportCheck:
    """Compare logits of ``model`` and the ONNX file on ``images`` (real inputs, not only random noise)."""
    reference = model.eval()(images).float().numpy()
    got = ort_logits(ort_session(path), images.numpy())
    return ExportCheck(max_abs_logit_diff=float(np.abs(reference - got).max()),
                       top1_agreement=float(np.mean(reference.argmax(1) == got.argmax(1))), exporter=exporter)
