"""Size / latency table of compression variants of one architecture, measured in one process.

Every row is measured in the same run as the baseline (dense FP32 PyTorch eager), so ratios are fair.
Weights are whatever the model holds (random for the benchmark): size and latency do not depend on them,
accuracy does, and is measured by the sweep instead.
"""

from __future__ import annotations

import copy
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.artifacts.card import artifact_bytes
from core.compress.export import export_onnx
from core.compress.latency import Latency, onnx_latency, torch_latency
from core.compress.prune import count_macs_params, structured_prune, unstructured_prune
from core.compress.quantize import depthwise_conv_nodes, quantize_onnx, torch_dynamic_quantize
from core.models import create_model

log = logging.getLogger(__name__)


def state_dict_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()



def benchmark_architecture(
    arch: str,
    *,
    workdir: Path,
    ratios: tuple[float, ...] = (0.25, 0.5, 0.7),
    input_size: int = 224,
    threads: int = 2,
    runs: int = 20,
    batch_sizes: tuple[int, ...] = (1, 8),
    calibration_images: int = 16,
) -> pd.DataFrame:
    """One row per variant: params, MACs, artifact size, latency at each batch size, ratios vs dense FP32 torch."""
    torch.manual_seed(0)
    dense = create_model(arch, pretrained=False).eval()
    example = torch.randn(1, 3, input_size, input_size)
    calib = np.random.default_rng(0).standard_normal((calibration_images, 3, input_size, input_size),
                                                     dtype=np.float32)
    rows: list[dict[str, object]] = []

    def add(variant: str, runtime: str, size: int, model: torch.nn.Module, lat: dict[int, Latency], **extra: object
            ) -> None:
        macs, params = count_macs_params(model, example) if runtime != "torch-dq" else (float("nan"), float("nan"))
        row: dict[str, object] = {"arch": arch, "variant": variant, "runtime": runtime, "params_m": params / 1e6,
                                  "gmacs": macs / 1e9, "size_mb": size / 1e6, **extra}
        for b, latency in lat.items():
            row[f"b{b}_ms"] = latency.median_ms
            row[f"b{b}_iqr_ms"] = latency.iqr_ms
        rows.append(row)
        log.info("%s %s: %.1f MB, b1 %.1f ms", arch, variant, size / 1e6, lat[batch_sizes[0]].median_ms)

    def torch_lat(m: torch.nn.Module) -> dict[int, Latency]:
        return {b: torch_latency(m, input_size=input_size, batch=b, threads=threads,
                                 runs=runs if b == 1 else max(5, runs // 2)) for b in batch_sizes}

    def onnx_lat(p: Path) -> dict[int, Latency]:
        return {b: onnx_latency(str(p), input_size=input_size, batch=b, threads=threads,
                                runs=runs if b == 1 else max(5, runs // 2)) for b in batch_sizes}

    def onnx_pair(model: torch.nn.Module, name: str) -> None:
        fp32 = workdir / f"{arch}-{name}-fp32.onnx"
        export_onnx(model, fp32, input_size=input_size)
        add(f"{name}-fp32-onnx", "onnxruntime", artifact_bytes(fp32), model, onnx_lat(fp32))
        int8 = quantize_onnx(fp32, workdir / f"{arch}-{name}-int8.onnx", mode="static", calibration=calib)
        add(f"{name}-int8-static", "onnxruntime", artifact_bytes(int8), model, onnx_lat(int8))
        if depthwise_conv_nodes(fp32):  # int8 depthwise convs are slow on x86: also measure them kept in fp32
            keep = quantize_onnx(fp32, workdir / f"{arch}-{name}-int8-keepdw.onnx", mode="static",
                                 calibration=calib, exclude="depthwise")
            add(f"{name}-int8-static-keepdw", "onnxruntime", artifact_bytes(keep), model, onnx_lat(keep))

    add("dense-fp32-torch", "torch", state_dict_bytes(dense), dense, torch_lat(dense))
    onnx_pair(dense, "dense")
    dq = torch_dynamic_quantize(copy.deepcopy(dense))
    add("dense-torch-dynamic (DQ)", "torch-dq", state_dict_bytes(dq), dq, torch_lat(dq))
    sparse = copy.deepcopy(dense)
    sparsity = unstructured_prune(sparse, amount=0.5)
    fp32 = workdir / f"{arch}-unstructured-fp32.onnx"
    export_onnx(sparse, fp32, input_size=input_size)
    add("unstructured-0.5-fp32-onnx", "onnxruntime", artifact_bytes(fp32), sparse, onnx_lat(fp32),
        sparsity=sparsity)
    for ratio in ratios:
        pruned = copy.deepcopy(dense)
        structured_prune(pruned, ratio=ratio, example_input=torch.randn(1, 3, 64, 64))
        onnx_pair(pruned, f"pruned-{ratio:g}")
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["size_ratio"] = base["size_mb"] / table["size_mb"]
    for b in batch_sizes:
        table[f"b{b}_speedup"] = base[f"b{b}_ms"] / table[f"b{b}_ms"]
    return table
