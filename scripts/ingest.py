"""Merge sweep shard stores into the main results store, without duplicates.

    python -m scripts.ingest results/shards/*.duckdb [--db results/results.duckdb]
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.store.results import DEFAULT_DB, ResultsStore, ingest


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Merge shard stores into the results store", add_help=add_help)
    parser.add_argument("shards", nargs="+", help="shard DuckDB files")
    parser.add_argument("--db", default=str(DEFAULT_DB), help="target results store")
    parser.add_argument("--run-id", dest="run_ids", action="append",
                        help="copy only this run (repeat the flag for several); default: every run the target lacks")
    return parser


def main(args: argparse.Namespace) -> int:
    with ResultsStore(args.db) as store:
        for shard in args.shards:
            added = ingest(store, shard, run_ids=args.run_ids)
            print(f"{shard}: {added} new run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
