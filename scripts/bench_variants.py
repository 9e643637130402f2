"""Latency of a sweep's deployable variants against its dense fp32 ONNX model, side by side in one run.

    python -m scripts.bench_variants --variants results/variants/<parent_run_id> [--threads 2] [--rounds 10]

Run it alone on the machine. Every variant folder under ``--variants`` is loaded through the predictor the site
uses; the variants are timed in interleaved rounds (each round times every variant ``--runs`` times at batch 1,
after warm-up, in a shuffled order), so drift of the machine hits all of them alike. Prints the median over all
timed calls, the interquartile range, and the speed-up against ``dense-fp32`` (ONNX Runtime fp32, the deployable
baseline) and ``dense-torch_fp32`` (PyTorch eager), with the CPU's flags (int8 kernels differ with VNNI).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.artifacts.card import variant_folders
from core.cli import run_cli, script_parser
from core.compress.latency import summarize, time_calls
from core.provenance import git_sha, machine_description
from core.serve.predict import load_predictor
from core.store.frames import BASELINE_VARIANT, ONNX_BASELINE_VARIANT


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Sweep variants' latency against their dense fp32 ONNX model", add_help=add_help)
    parser.add_argument("--variants", required=True, help="folder of one parent's variant folders")
    parser.add_argument("--only", nargs="*", default=[], help="variant names to time (default: all)")
    parser.add_argument("--tta", nargs="*", default=[], help="also time these variants with flip test-time "
                                                             "augmentation ('<name>+tta')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per variant and round")
    parser.add_argument("--csv", help="also write the table to this CSV")
    return parser


def main(args: argparse.Namespace) -> int:
    folders = {f.name: f for f in variant_folders(Path(args.variants))}
    if args.only:
        unknown = sorted(set(args.only) - set(folders))
        if unknown:
            print(f"no such variant(s) under {args.variants}: {', '.join(unknown)}; have: {', '.join(sorted(folders))}",
                  file=sys.stderr)
            return 2
        folders = {name: folders[name] for name in args.only}
    if ONNX_BASELINE_VARIANT not in folders:  # every ratio is against it, so it is always timed
        folders[ONNX_BASELINE_VARIANT] = Path(args.variants) / ONNX_BASELINE_VARIANT
    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.tta) - set(folders))
    if unknown:
        print(f"--tta names variant(s) not timed here: {', '.join(unknown)}", file=sys.stderr)
        return 2
    predictors = {name: load_predictor(str(folder), threads=args.threads) for name, folder in sorted(folders.items())}
    for name in args.tta:
        predictors[f"{name}+tta"] = load_predictor(str(folders[name]), threads=args.threads, tta=True)
        folders[f"{name}+tta"] = folders[name]
    inputs = {name: np.random.default_rng(0).standard_normal(
        (1, 3, p.card.preprocessing.input_size, p.card.preprocessing.input_size), dtype=np.float32)
        for name, p in predictors.items()}
    times: dict[str, list[float]] = {name: [] for name in predictors}
    order = list(predictors)
    rng = random.Random(0)
    here = machine_description()
    print(f"machine: {here['host']} ({here['cpu']}), CPU flags: {here['cpu_flags']}, {args.threads} "
          f"threads, git {git_sha()[:12]}; {args.rounds} interleaved rounds x {args.runs} calls at batch 1")
    with torch.inference_mode():
        for r in range(args.rounds):
            rng.shuffle(order)
            for name in order:
                times[name] += time_calls(lambda n=name: predictors[n].logits(inputs[n]), warmup=3 if r == 0 else 1,
                                          runs=args.runs)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for name, t in times.items():
        lat = summarize(t, batch=1, threads=args.threads)
        size = sum(f.stat().st_size for f in folders[name].iterdir() if f.name.startswith("model."))
        rows.append({"variant": name, "input_px": predictors[name].card.preprocessing.input_size,
                     "size_mb": size / 1e6, "median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms, "calls": lat.runs})
    table = pd.DataFrame(rows).set_index("variant")
    onnx = table.loc[ONNX_BASELINE_VARIANT]
    table["faster_vs_onnx"] = onnx["median_ms"] / table["median_ms"]
    table["smaller_vs_onnx"] = onnx["size_mb"] / table["size_mb"]
    if BASELINE_VARIANT in table.index:
        table["faster_vs_eager"] = table.loc[BASELINE_VARIANT, "median_ms"] / table["median_ms"]
    table = table.sort_values("median_ms")
    print(table.to_string(float_format=lambda x: f"{x:.2f}"))
    if args.csv:
        table.to_csv(args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
