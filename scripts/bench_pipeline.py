"""Benchmark the demo pipeline's wall time: cold (fresh synthetic data and image cache) vs warm (both present).

    python -m scripts.bench_pipeline [--runs 3] [--config configs/demo.yaml]

Each run is a separate ``python -m scripts.pipeline`` process in a fresh temporary output folder, so the
figures include interpreter start-up and imports, as a user sees them. Prints median and min-max per mode,
peak memory, and the 3-minute budget of the issue beside them.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 180.0


def _one(config: str, work: Path, *, fresh: bool) -> tuple[float, float]:
    data = work / "data"
    if fresh:
        subprocess.run(["rm", "-rf", str(data), str(work / "cache")], check=True)
    cmd = [sys.executable, "-m", "scripts.pipeline", "-c", config, "--data-dir", str(data),
           "--cache-dir", str(work / "cache"), "--output-dir", str(work / "models"), "--db", str(work / "r.duckdb")]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mb


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark the demo pipeline", add_help=add_help)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--runs", type=int, default=3)
    return parser


def main(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        times: dict[str, list[float]] = {"cold": [], "warm": []}
        peak = 0.0
        for _ in range(args.runs):
            for mode in ("cold", "warm"):
                wall, peak_mb = _one(args.config, work, fresh=mode == "cold")
                times[mode].append(wall)
                peak = max(peak, peak_mb)
        for mode, ts in times.items():
            rows.append((mode, statistics.median(ts), min(ts), max(ts)))
    print(f"pipeline benchmark: {args.config}, {args.runs} runs per mode, peak RSS {peak:.0f} MB")
    print(f"{'mode':<6} {'median s':>9} {'min s':>7} {'max s':>7} {'budget s':>9} {'within':>7}")
    for mode, med, lo, hi in rows:
        print(f"{mode:<6} {med:9.1f} {lo:7.1f} {hi:7.1f} {BUDGET_S:9.0f} {'yes' if hi <= BUDGET_S else 'NO':>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
