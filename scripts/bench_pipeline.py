"""Benchmark the demo's wall time: the pipeline alone and with its sweep, cold and warm.

    python -m scripts.bench_pipeline [--runs 3] [--config configs/demo.yaml] [--sweep configs/sweep-demo.yaml]

cold: no synthetic data and no image cache yet (a first `make demo`); warm: both present (a second one).
Each run is a separate ``python -m scripts.pipeline`` process in a fresh temporary output folder, so the
figures include interpreter start-up and imports, as a user sees them. Prints median and min-max per case
beside the budgets (pipeline 3 minutes, with the sweep 5 minutes) and the peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.cli import run_cli, script_parser

BUDGETS_S = {"pipeline": 180.0, "pipeline+sweep": 300.0}


def _one(config: str, sweep: str | None, work: Path, *, cold: bool) -> float:
    if cold:
        for sub in ("data", "cache"):
            shutil.rmtree(work / sub, ignore_errors=True)
    for sub in ("models", "variants"):
        shutil.rmtree(work / sub, ignore_errors=True)
    (work / "r.duckdb").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "scripts.pipeline", "-c", config, "--data-dir", str(work / "data"),
           "--cache-dir", str(work / "cache"), "--output-dir", str(work / "models"), "--db", str(work / "r.duckdb")]
    if sweep:
        sweep_cfg = work / "sweep.yaml"
        sweep_cfg.write_text(Path(sweep).read_text() + f"\nvariants_dir: {work / 'variants'}\n")
        cmd += ["--sweep", str(sweep_cfg)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    return time.perf_counter() - start


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Benchmark the demo pipeline", add_help=add_help)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--sweep", default="configs/sweep-demo.yaml")
    parser.add_argument("--runs", type=int, default=3)
    return parser


def main(args: argparse.Namespace) -> int:
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.runs):
            for case, sweep in (("pipeline", None), ("pipeline+sweep", args.sweep)):
                for temp in ("cold", "warm"):
                    times.setdefault((case, temp), []).append(_one(args.config, sweep, work, cold=temp == "cold"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"demo benchmark: {args.config} (+ {args.sweep}), {args.runs} run(s) per case, {os.cpu_count()} CPUs, "
          f"peak RSS {peak:.0f} MB")
    print(f"{'case':<16} {'cache':<5} {'median s':>9} {'min s':>7} {'max s':>7} {'budget s':>9} {'within':>7}")
    for (case, temp), ts in times.items():
        budget = BUDGETS_S[case]
        print(f"{case:<16} {temp:<5} {statistics.median(ts):9.1f} {min(ts):7.1f} {max(ts):7.1f} {budget:9.0f} "
              f"{'yes' if max(ts) <= budget else 'NO':>7}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
