"""Why an ``.ort`` file runs slower than its ``.onnx`` on x86: the same fp32 model as ``.onnx`` (ONNX Runtime's
default level, which applies the x86-only NCHWc layout transform at load), as ``.onnx`` with layout optimisations
off (``extended``), and as ``.ort`` files of the Fixed and Runtime optimisation styles, for ARM (the converter's
default: NCHWc excluded) and for amd64.

    python -m scripts.bench_ort_styles --onnx <fp32.onnx> [--threads 2 --rounds 20 --runs 20]

Batch 1, fixed threads, no spinning between calls, interleaved rounds, median and IQR; run it alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.cli import run_cli, script_parser
from core.compress.mobile import export_ort


def _session(path: Path, *, threads: int, level: object = None) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # several sessions share the cores
    if level is not None:
        opts.graph_optimization_level = level
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Time an fp32 model as .onnx and as .ort files of each optimisation style",
                           add_help=add_help)
    parser.add_argument("--onnx", required=True, help="fp32 ONNX file (a sweep's dense-fp32 variant's model.onnx)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20, help="calls per file per round")
    return parser


def main(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    onnx = Path(args.onnx)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"onnx (level all: NCHWc at load)": (onnx, None),
                 "onnx (level extended: no layout)": (onnx, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)}
        for style in ("fixed", "runtime"):
            for platform in (None, "amd64"):
                out = Path(tmp) / f"{style}-{platform}.ort"
                label = f"ort {style}, {'for amd64' if platform else 'for ARM (default)'}"
                files[label] = (export_ort(onnx, out, style=style, target_platform=platform), None)
        sessions = {label: _session(path, threads=args.threads, level=level) for label, (path, level) in files.items()}
        name = next(iter(sessions.values())).get_inputs()[0].name
        size = next(iter(sessions.values())).get_inputs()[0].shape[-1]
        x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
        reference = sessions[next(iter(sessions))].run(None, {name: x})[0]
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for session in sessions.values():
            for _ in range(args.runs):  # warm-up
                session.run(None, {name: x})
        for _ in range(args.rounds):
            for label, session in sessions.items():
                for _ in range(args.runs):
                    start = time.perf_counter()
                    session.run(None, {name: x})
                    times[label].append((time.perf_counter() - start) * 1e3)
        print(f"{onnx}: batch 1, {args.threads} threads, {args.rounds} interleaved rounds of {args.runs} calls")
        print(f"{'file':<36} {'median ms':>10} {'IQR':>7} {'size MB':>8} {'max |diff|':>11}")
        for label, session in sessions.items():
            q1, q3 = np.percentile(times[label], [25, 75])
            diff = float(np.abs(session.run(None, {name: x})[0] - reference).max())
            print(f"{label:<36} {statistics.median(times[label]):10.2f} {q3 - q1:7.2f} "
                  f"{files[label][0].stat().st_size / 1e6:8.2f} {diff:11.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
