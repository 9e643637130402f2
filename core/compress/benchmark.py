"""Size / latency table of compression variants of one architecture, measured in one process.

Every row is measured in the same run as the baseline (dense FP32 PyTorch eager), so ratios are fair.
Weights are whatever the model holds (random for the benchmark): size and latency do not depend on them,
accuracy does, and is measured by the sweep instead.
"""

from __future__ import annotations

import copy
import io
import logging
from dataclasses import dataclass, field
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



@dataclass
class _ArchitectureBench:
    """The rows of one architecture's benchmark, measured the same way for every variant."""

    arch: str
    workdir: Path
    input_size: int
    threads: int
    runs: int
    batch_sizes: tuple[int, ...]
    calib: np.ndarray
    rows: list[dict[str, object]] = field(default_factory=list)

    def add(self, variant: str, runtime: str, size: int, model: torch.nn.Module, lat: dict[int, Latency],
            **extra: object) -> None:
        example = torch.randn(1, 3, self.input_size, self.input_size)
        macs, params = (count_macs_params(model, example) if runtime != "torch-dq"
                        else (float("nan"), float("nan")))
        row: dict[str, object] = {"arch": self.arch, "variant": variant, "runtime": runtime, "params_m": params / 1e6,
                                  "gmacs": macs / 1e9, "size_mb": size / 1e6, **extra}
        for b, latency in lat.items():
            row[f"b{b}_ms"] = latency.median_ms
            row[f"b{b}_iqr_ms"] = latency.iqr_ms
        self.rows.append(row)
        log.info("%s %s: %.1f MB, b1 %.1f ms", self.arch, variant, size / 1e6, lat[self.batch_sizes[0]].median_ms)

    def _runs(self, batch: int) -> int:
        return self.runs if batch == 1 else max(5, self.runs // 2)

    def torch_lat(self, model: torch.nn.Module) -> dict[int, Latency]:
        return {b: torch_latency(model, input_size=self.input_size, batch=b, threads=self.threads, runs=self._runs(b))
                for b in self.batch_sizes}

    def onnx_lat(self, path: Path) -> dict[int, Latency]:
        return {b: onnx_latency(str(path), input_size=self.input_size, batch=b, threads=self.threads,
                                runs=self._runs(b)) for b in self.batch_sizes}

    def onnx(self, model: torch.nn.Module, name: str, **extra: object) -> Path:
        """Export ``model`` as fp32 ONNX and add its row."""
        fp32 = self.workdir / f"{self.arch}-{name}-fp32.onnx"
        export_onnx(model, fp32, input_size=self.input_size)
        self.add(f"{name}-fp32-onnx", "onnxruntime", artifact_bytes(fp32), model, self.onnx_lat(fp32), **extra)
        return fp32

    def onnx_pair(self, model: torch.nn.Module, name: str) -> None:
        """fp32 ONNX, static int8, and static int8 with the depthwise convs kept in fp32 where there are any."""
        fp32 = self.onnx(model, name)
        int8 = quantize_onnx(fp32, self.workdir / f"{self.arch}-{name}-int8.onnx", mode="static",
                             calibration=self.calib)
        self.add(f"{name}-int8-static", "onnxruntime", artifact_bytes(int8), model, self.onnx_lat(int8))
        if depthwise_conv_nodes(fp32):  # int8 depthwise convs are slow on x86: also measure them kept in fp32
            keep = quantize_onnx(fp32, self.workdir / f"{self.arch}-{name}-int8-keepdw.onnx", mode="static",
                                 calibration=self.calib, exclude="depthwise")
            self.add(f"{name}-int8-static-keepdw", "onnxruntime", artifact_bytes(keep), model, self.onnx_lat(keep))


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
    calib = np.random.default_rng(0).standard_normal((calibration_images, 3, input_size, input_size),
                                                     dtype=np.float32)
    bench = _ArchitectureBench(arch, workdir, input_size, threads, runs, batch_sizes, calib)
    bench.add("dense-fp32-torch", "torch", state_dict_bytes(dense), dense, bench.torch_lat(dense))
    bench.onnx_pair(dense, "dense")
    dq = torch_dynamic_quantize(copy.deepcopy(dense))
    bench.add("dense-torch-dynamic (DQ)", "torch-dq", state_dict_bytes(dq), dq, bench.torch_lat(dq))
    sparse = copy.deepcopy(dense)
    bench.onnx(sparse, "unstructured-0.5", sparsity=unstructured_prune(sparse, amount=0.5))
    for ratio in ratios:
        pruned = copy.deepcopy(dense)
        structured_prune(pruned, ratio=ratio, example_input=torch.randn(1, 3, 64, 64))
        bench.onnx_pair(pruned, f"pruned-{ratio:g}")
    table = pd.DataFrame(bench.rows)
    base = table.iloc[0]
    table["size_ratio"] = base["size_mb"] / table["size_mb"]
    for b in batch_sizes:
        table[f"b{b}_speedup"] = base[f"b{b}_ms"] / table[f"b{b}_ms"]
    return table
