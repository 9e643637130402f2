"""Two stored models on the same images: each one's figures and their paired difference with a lesion-level interval.

    python -m scripts.compare_runs --db results/cv.duckdb --a <run id>[:split] --b <run id>[:split] \\
        --lesions results/cv/<cv id>/folds.csv

A run's split defaults to ``test`` (a cross-validation summary's fold ensemble is ``<cv id>:test_ensemble``);
``<run id>:val+test`` pools splits (the sweep's paired differences are on validation and test pooled);
``<cv id>-fold0,<cv id>-fold1:oof`` pools runs (two recipes over the folds each has done so far); ``--db-b`` names B's
store where it is not A's.
``--lesions`` is any CSV with ``image_id`` and ``lesion_id`` (a split.csv or folds.csv): images of one lesion are
resampled together. Only images both runs scored are compared; their labels must agree.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.store.results import DEFAULT_DB, ResultsStore
from core.store.summary import paired_comparison


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Paired comparison of two stored models on the same images", add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--a", required=True, help="run id[:split] of the first model (splits pool with +: "
                                                    "val+test; runs with ,: cv-fold0,cv-fold1:oof)")
    parser.add_argument("--b", required=True, help="run id[:split] of the second model (the reference)")
    parser.add_argument("--db-b", default=None, help="B's results store, where it is not --db (read-only)")
    parser.add_argument("--lesions", required=True, help="CSV with image_id and lesion_id columns")
    return parser


def main(args: argparse.Namespace) -> int:
    with ResultsStore(args.db, read_only=True) as store, ResultsStore(args.db_b or args.db, read_only=True) as store_b:
        table = paired_comparison(store, args.a, args.b, lesions_csv=args.lesions, store_b=store_b)
    print(f"A = {args.a}\nB = {args.b}\n{table.attrs['images']} images of {table.attrs['lesions']} lesions; "
          "95% bootstrap intervals over lesions (2,000 replicates), the difference paired")
    print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
