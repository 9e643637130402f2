"""Compression sweep: models x pruning ratios x quantization modes, each cell stored as a child run.

    python -m scripts.sweep -c configs/sweep-demo.yaml [--shard 0/4] [--flag value ...]

Resumable: completed cells are skipped. With --shard i/n (n > 1) only every n-th group runs and results go to
a shard store (default results/shards/<sweep>-<i>of<n>.duckdb) for `python -m scripts.ingest` (Slurm job arrays).
With --ray every group of cells is a Ray task: a local instance without an address, or `--ray auto` / `--ray
ADDRESS` to join a cluster; this process stays the only writer of the store. --time-on-driver re-times every new
variant on this machine, so latency columns compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from core.cli import config_parser, run_cli
from core.config import config_from_args
from core.jobs.sweep import SweepConfig, parse_shard, run_sweep, sweep_id


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = config_parser("Run a compression sweep", SweepConfig, add_help=add_help)
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run the groups as Ray tasks: no value = a local instance for this command; 'auto' or "
                             "an address = an existing cluster (variants_dir must be reachable from every worker)")
    parser.add_argument("--time-on-driver", action="store_true",
                        help="re-time every new variant on this machine before storing it")
    return parser


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(SweepConfig, args)
    i, n = parse_shard(cfg.shard)
    if n > 1 and "db" not in vars(args):
        cfg = dataclasses.replace(cfg, db=str(Path("results/shards") / f"sweep-{sweep_id(cfg)}-{i}of{n}.duckdb"))
    summary = run_sweep(cfg, use_ray=args.ray is not None, ray_address=None if args.ray == "local" else args.ray,
                        time_on_driver=args.time_on_driver)
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nresults store: {cfg.db}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
