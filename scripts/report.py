"""Write the full-study report (Markdown + PNG plots) from a results store.

    python -m scripts.report --db results/results.duckdb [--out results] [--split test]
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.errors import ConfigError
from core.store.report import write_report
from core.store.results import DEFAULT_DB, ResultsStore


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Write results/REPORT.md and its plots from a results store", add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--out", default="results", help="folder for REPORT.md and report-plots/")
    parser.add_argument("--split", default="test", choices=["test", "val"], help="split of the accuracy figures")
    return parser


def main(args: argparse.Namespace) -> int:
    with ResultsStore(args.db, read_only=True) as store:
        try:
            report = write_report(store, args.out, split=args.split)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    print(f"wrote {report.markdown} and {len(report.plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
