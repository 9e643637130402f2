"""Size / latency benchmark of compression variants, against dense FP32 PyTorch measured in the same run.

    python -m scripts.bench_compression [--arch resnet50 efficientnet_b0] [--threads 2]

Prints one table per architecture and checks the targets: the best pruned+int8 variant >= 10x smaller
than the dense FP32 state dict and >= 6x faster at batch 1 than dense FP32 PyTorch eager.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import onnxruntime
import pandas as pd
import torch

from core.cli import run_cli, script_parser
from core.compress.benchmark import benchmark_architecture
from core.models import ARCHITECTURES

SIZE_TARGET, SPEED_TARGET = 10.0, 6.0


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Compression size/latency benchmark", add_help=add_help)
    parser.add_argument("--arch", nargs="+", default=["resnet50", "efficientnet_b0"], choices=list(ARCHITECTURES))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.5, 0.7])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs at batch 1 (half that at batch 8)")
    parser.add_argument("--csv", help="also write all rows to this CSV")
    return parser


def main(args: argparse.Namespace) -> int:
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, input {args.input_size}px, "
          f"median of {args.runs} runs after warm-up")
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            table = benchmark_architecture(arch, workdir=Path(tmp), ratios=tuple(args.ratios),
                                           input_size=args.input_size, threads=args.threads, runs=args.runs)
            tables.append(table)
            shown = table[["variant", "params_m", "gmacs", "size_mb", "size_ratio", "b1_ms", "b1_iqr_ms",
                           "b1_speedup", "b8_ms", "b8_speedup"]]
            print(f"\n== {arch} (ratios against dense-fp32-torch, measured in this run)")
            print(shown.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
            best = table[table["variant"].str.startswith("pruned") & table["variant"].str.contains("int8-static")]
            top = best.loc[best["b1_speedup"].idxmax()]
            ok = top["size_ratio"] >= SIZE_TARGET and top["b1_speedup"] >= SPEED_TARGET
            print(f"best pruned+int8: {top['variant']}: {top['size_ratio']:.1f}x smaller (target {SIZE_TARGET:g}x), "
                  f"{top['b1_speedup']:.1f}x faster at batch 1 (target {SPEED_TARGET:g}x): "
                  f"{'met' if ok else 'NOT met'}")
    if args.csv:
        pd.concat(tables).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
