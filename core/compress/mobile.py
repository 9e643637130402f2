"""Phone formats: every deployable model also as an ONNX Runtime Mobile ``.ort``, an ExecuTorch ``.pte`` (XNNPACK)
and a LiteRT ``.tflite``, fp32 and int8.

- ``ort_fp32`` / ``ort_static``: the fp32 / static int8 ONNX file converted by ONNX Runtime's own tool
  (``onnxruntime.tools.convert_onnx_models_to_ort``, fixed optimisations), with the operator list a reduced
  ONNX Runtime build needs (``required_operators.config``).
- ``pte_fp32`` / ``pte_int8``: ``torch.export`` lowered to XNNPACK; int8 by the XNNPACK quantizer (symmetric,
  per-channel weights, activations calibrated on training images), conv + ReLU6 observed after the clip
  (:mod:`core.compress.pt2e`).
- ``tflite_fp32`` / ``tflite_int8``: ``litert_torch.convert``; int8 by its PT2E quantizer (the same scheme).

Each file is read back by its own runtime (:class:`core.artifacts.mobile_runtimes.MobileRunner`) before the sweep
measures it; mobile files take one image at a time (batch 1), as an app calls them.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.artifacts.mobile_runtimes import OPERATORS_FILE
from core.compress.modes import MODES, mode_of
from core.compress.pt2e import clipped_conv_quantizer, pt2e_int8
from core.errors import ModelError

log = logging.getLogger(__name__)

def export_ort(onnx_path: str | Path, out_path: str | Path, *, style: str = "fixed",
               target_platform: str | None = None) -> Path:
    """Convert an ONNX file to ``out_path`` (.ort) and write ``required_operators.config`` beside it.

    ``style``: ``fixed`` (the graph optimised once, at level "all") or ``runtime`` (optimisations a reduced build
    can apply at load are recorded). The converter leaves out the x86-only NCHWc layout transform unless
    ``target_platform`` is ``amd64``: that is why a default ``.ort`` runs slower than its ``.onnx`` on x86 (see
    scripts/bench_ort_styles.py), and why it is the file for an ARM phone."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in" / "model.onnx"
        source.parent.mkdir()
        shutil.copyfile(onnx_path, source)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # the tool leaves the .ort file open: closed here
            styles = {"fixed": OptimizationStyle.Fixed, "runtime": OptimizationStyle.Runtime}
            if style not in styles:
                raise ModelError(f"unknown .ort optimisation style {style!r} (known: {', '.join(styles)})")
            convert_onnx_models_to_ort(source.parent, output_dir=Path(tmp) / "out",
                                       optimization_styles=[styles[style]], target_platform=target_platform)
            gc.collect()
        produced = sorted((Path(tmp) / "out").glob("*.ort"))
        if not produced:
            raise ModelError(f"{onnx_path}: ONNX Runtime's converter wrote no .ort file")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced[0], out_path)
        operators = sorted((Path(tmp) / "out").glob("*.config"))
        if operators:
            shutil.copyfile(operators[0], out_path.with_name(OPERATORS_FILE))
    return out_path


def _exportable(model: nn.Module) -> nn.Module:
    model.eval()  # not chained: see core.compress.export
    return model.to(memory_format=torch.contiguous_format)


def export_pte(model: nn.Module, out_path: str | Path, *, input_size: int, calibration: np.ndarray | None = None
               ) -> Path:
    """An ExecuTorch program lowered to XNNPACK; int8 (XNNPACK quantizer) when ``calibration`` images are given."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = _exportable(model)
    example = torch.randn(1, 3, input_size, input_size)
    if calibration is not None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        quantizer = clipped_conv_quantizer(
            XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))
        model = pt2e_int8(model, example=example, calibration=calibration, quantizer=quantizer)
    program = to_edge_transform_and_lower(torch.export.export(model, (example,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(program.buffer)
    return out_path


def export_tflite(model: nn.Module, out_path: str | Path, *, input_size: int,
                  calibration: np.ndarray | None = None) -> Path:
    """A LiteRT flatbuffer (NCHW input, as the other formats); int8 (its PT2E quantizer) with ``calibration``."""
    import litert_torch

    model = _exportable(model)
    example = torch.randn(1, 3, input_size, input_size)
    quant_config = None
    if calibration is not None:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = clipped_conv_quantizer(
            PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))
        model = pt2e_int8(model, example=example, calibration=calibration, quantizer=quantizer,
                           fold_quantize=False)
        quant_config = QuantConfig(pt2e_quantizer=quantizer)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    litert_torch.convert(model, (example,), quant_config=quant_config).export(str(out_path))
    return out_path


def export_mobile(mode: str, out_path: str | Path, *, model: nn.Module, onnx_file: Callable[[str], Path],
                  input_size: int, calibration: np.ndarray | None) -> Path:
    """Write ``mode``'s file (a phone mode of :data:`core.compress.modes.MODES`) to ``out_path``; ``onnx_file(mode)``
    gives the ONNX file an ``.ort`` is converted from (the caller builds it), ``calibration``: training images for the
    int8 modes."""
    spec = mode_of(mode)
    if not spec.phone:
        known = ", ".join(m.name for m in MODES.values() if m.phone)
        raise ModelError(f"{mode!r} is not a phone mode (known: {known})")
    if spec.route == "ort":
        return export_ort(onnx_file(spec.source), out_path)
    if spec.int8 and calibration is None:
        raise ModelError(f"{mode}: int8 export needs calibration images")
    exporters = {".pte": export_pte, ".tflite": export_tflite}
    return exporters[spec.suffix](model, out_path, input_size=input_size,
                                  calibration=calibration if spec.int8 else None)
