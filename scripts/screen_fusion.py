"""Screen forms of the metadata fusion on a finished cross-validation's pooled out-of-fold predictions.

    python -m scripts.screen_fusion --db results/results.duckdb --cv <cv id> --folds 5 \\
        --data ../shared/data/ham10000 [--out results/cv/<cv id>/fusion-variants.csv]

Every variant (``core.jobs.fusion_variants.VARIANTS``: regularisation, non-linear age, interactions, a
balanced-accuracy bias on top) is cross-fitted over lesion-grouped inner folds, so no image is scored by a fit on
it or its lesion, and paired against the deployed form on the same images (95% intervals over lesions).
"""

from __future__ import annotations

import argparse
import sys

from core.cli import print_table, run_cli, script_parser, write_table
from core.jobs.fusion_variants import screen_fusion_variants
from core.jobs.screen import SCREEN_METRICS, cv_held_out, metadata_rows, paired_columns
from core.store.results import DEFAULT_DB, ResultsStore


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Screen forms of the metadata fusion out of fold, paired", add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--cv", required=True, help="the cross-validation's id (its fold runs are pooled)")
    parser.add_argument("--folds", type=int, required=True, help="how many folds it has (every one must be done)")
    parser.add_argument("--data", required=True, help="the dataset folder (metadata: lesion ids, age, sex, site)")
    parser.add_argument("--out", help="also write the table here as CSV (with the cross-validation and git SHA)")
    return parser


def main(args: argparse.Namespace) -> int:
    with ResultsStore(args.db, read_only=True) as store:
        held = cv_held_out(store, args.cv, args.folds)
    table = screen_fusion_variants(held, metadata_rows(args.data, held.image_ids))
    shown = ["variant", "cpu_seconds", *paired_columns(SCREEN_METRICS[:2])]
    print_table(table, shown, title=f"{args.cv}: {len(held.image_ids)} out-of-fold images; deltas against the first "
                                    "row, paired")
    write_table(table, args.out, cv=args.cv, folds=args.folds)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
