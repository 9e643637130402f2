"""Quantization of a model's ONNX export by ONNX Runtime, and PyTorch dynamic quantization (the modes that use them
are records in :mod:`core.compress.modes`).

- ``fp32``: the ONNX export, unchanged.
- ``dynamic``: ONNX Runtime dynamic int8 (weights int8, activations quantized on the fly).
- ``torch_dynamic``: PyTorch dynamic quantization of Linear layers: what the original study called DQ.
  On a CNN it leaves every convolution in fp32, so size and speed barely change; the tables show it.
- ``static``: ONNX Runtime static int8, QDQ format, per-channel weights, activations calibrated on N training
  images (minmax / percentile / entropy), optionally with sensitive nodes (e.g. depthwise convs) kept fp32.
- ``fp16``: ONNX float16 weights and activations (inputs and outputs stay float32).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
from onnxruntime.quantization import quantize_static as ort_quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from core.errors import ConfigError, check_allowed

log = logging.getLogger(__name__)

ONNX_MODES = ("fp32", "dynamic", "static", "fp16")  # what quantize_onnx applies (a Mode's onnx_quantize)
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}
EXCLUDE_PRESETS = ("none", "depthwise", "sensitive")


class _ArrayReader(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime one batch at a time."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 8):
        self.batches = iter([{input_name: images[i:i + batch_size].astype(np.float32)}
                             for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def depthwise_conv_nodes(path: str | Path) -> list[str]:
    """Names of grouped (depthwise) Conv nodes: the ones int8 hurts most in EfficientNets and MobileNets."""
    model = onnx.load(str(path), load_external_data=False)
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:
                names.append(node.name)
    return names


def sensitive_nodes(float_path: Path, qdq_path: Path, calibration: np.ndarray, *, count: int) -> list[str]:
    """The ``count`` weighted nodes (Conv, Gemm, MatMul) of the float model whose int8 quantization loses most,
    by ONNX Runtime's QDQ debugging tools: per node, the lower of its weights' and its output activation's
    signal-to-quantization-noise ratio (dB) on the calibration images."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    name = _input_name(float_path)
    with tempfile.TemporaryDirectory() as tmp:
        augmented = {}
        for key, path in (("float", float_path), ("qdq", qdq_path)):
            augmented[key] = str(Path(tmp) / f"{key}.onnx")
            modify_model_output_intermediate_tensors(str(path), augmented[key])
        acts = {k: collect_activations(p, _ArrayReader(name, calibration)) for k, p in augmented.items()}
    act_err = compute_activation_error(create_activation_matching(acts["qdq"], acts["float"]))
    weight_err = compute_weight_error(create_weight_matching(str(float_path), str(qdq_path)))
    model = onnx.load(str(float_path), load_external_data=False)
    scores: dict[str, float] = {}
    for node in model.graph.node:
        # Only the nodes that compute with weights: a Clip (ReLU6) folded into its neighbours' QDQ pairs shows a
        # meaningless ~0 dB "error" between tensors that are not the same quantity.
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        snr = [act_err[o]["qdq_err"] for o in node.output if o in act_err]
        snr += [weight_err[i] for i in node.input if i in weight_err]
        if snr and node.name:
            scores[node.name] = min(snr)
    worst = sorted(scores, key=scores.get)[:count]
    log.info("most sensitive nodes kept fp32: %s", ", ".join(f"{n} ({scores[n]:.1f} dB)" for n in worst))
    return worst


@contextlib.contextmanager
def _preprocessed(path: Path) -> Iterator[Path]:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) into a temp file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(out), skip_symbolic_shape=True)
        yield out


def _input_name(path: str | Path) -> str:
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    mode: str,
    calibration: np.ndarray | None = None,
    method: str = "minmax",
    per_channel: bool = True,
    exclude: str = "none",
    keep_fp32: int = 8,
) -> Path:
    """Write the ``mode`` variant of an fp32 ONNX model to ``out_path``.

    Args:
        calibration: float32 images (N, 3, H, W), preprocessed; required for ``static``.
        method: static calibration method, one of minmax / percentile / entropy.
        per_channel: per-output-channel weight scales (static); much better for depthwise convs.
        exclude: ``depthwise`` keeps grouped convolutions in fp32 (static); ``sensitive`` keeps the ``keep_fp32``
            nodes that lose most when quantized (found by a per-node scan on the calibration images) in fp32.
    """
    if mode not in ONNX_MODES:
        raise ConfigError(f"{mode!r} is not an ONNX mode; allowed: {', '.join(ONNX_MODES)}")
    check_allowed(method, CALIBRATION_METHODS, what="calibration method")
    check_allowed(exclude, EXCLUDE_PRESETS, what="exclusion preset")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "fp32":
        if fp32_path.resolve() != out_path.resolve():
            out_path.write_bytes(fp32_path.read_bytes())
    elif mode == "dynamic":
        with _preprocessed(fp32_path) as prepared:
            ort_quantize_dynamic(prepared, out_path, weight_type=QuantType.QInt8, per_channel=per_channel)
    elif mode == "static":
        if calibration is None or len(calibration) == 0:
            raise ConfigError("static quantization needs calibration images")
        excluded = depthwise_conv_nodes(fp32_path) if exclude == "depthwise" else []
        extra = {"CalibPercentile": 99.99} if method == "percentile" else {}
        with _preprocessed(fp32_path) as prepared:
            def quantize(nodes: list[str]) -> None:
                ort_quantize_static(prepared, out_path, _ArrayReader(_input_name(fp32_path), calibration),
                                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CALIBRATION_METHODS[method], nodes_to_exclude=nodes,
                                    extra_options=extra)

            quantize(excluded)
            if exclude == "sensitive":  # scan the fully quantized model, then keep its worst nodes in fp32
                # 32 images: the scan holds every intermediate tensor of both models in memory
                quantize(sensitive_nodes(prepared, out_path, calibration[:32], count=keep_fp32))
    else:  # fp16
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model16 = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model16, str(out_path))
    log.info("quantized %s -> %s (%s)", fp32_path.name, out_path, mode)
    return out_path


def torch_dynamic_quantize(model: nn.Module) -> nn.Module:
    """PyTorch dynamic int8 quantization of Linear layers (convolutions stay fp32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated in torch 2.14
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)

