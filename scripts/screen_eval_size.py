"""Score a cross-validation's fold models at other input sizes on their own held-out images, paired.

    python -m scripts.screen_eval_size --db results/results.duckdb --cv <cv id> --cv-dir results/cv --folds 5 \\
        --data ../shared/data/ham10000 --sizes 176 192 [--crop-pct 1.0] [--out results/cv/<cv id>/sizes.csv]

Inference only (no training): every out-of-fold image scored again by the fold model that did not train on it, at
each size, photo alone and with metadata fusion (cross-fitted over lesions), paired against the stored out-of-fold
predictions at the size the recipe trained at (95% intervals over lesions). ``core.jobs.eval_size`` says why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import print_table, run_cli, script_parser, write_table
from core.jobs.eval_size import cv_held_out_at, screen_sizes
from core.jobs.screen import SCREEN_METRICS, cv_held_out, metadata_rows, paired_columns
from core.store.results import DEFAULT_DB, ResultsStore


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Score fold models at other input sizes on their held-out images, paired",
                           add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--cv", required=True, help="the cross-validation's id")
    parser.add_argument("--cv-dir", default="results/cv", help="folder of cross-validation folders")
    parser.add_argument("--folds", type=int, required=True, help="how many folds it has (every one must be done)")
    parser.add_argument("--data", required=True, help="the dataset folder (metadata: lesion ids, age, sex, site)")
    parser.add_argument("--sizes", type=int, nargs="+", required=True, help="input sizes to score at (pixels)")
    parser.add_argument("--crop-pct", type=float, default=None,
                        help="centre-crop fraction at every size (default: each card's, 0.875 for timm models)")
    parser.add_argument("--out", help="also write the table here as CSV (with the cross-validation and git SHA)")
    return parser


def main(args: argparse.Namespace) -> int:
    with ResultsStore(args.db, read_only=True) as store:
        base = cv_held_out(store, args.cv, args.folds)
    folder = Path(args.cv_dir) / args.cv
    others = [cv_held_out_at(folder, args.folds, input_size=s, crop_pct=args.crop_pct) for s in args.sizes]
    table = screen_sizes(base, others, metadata_rows(args.data, base.image_ids))
    shown = ["on", "lever", *paired_columns(SCREEN_METRICS[:2])]
    print_table(table, shown, title=f"{args.cv}: {len(base.image_ids)} out-of-fold images; deltas against the stored "
                                    "predictions (photo alone, the recipe's size), paired")
    write_table(table, args.out, cv=args.cv, crop_pct=args.crop_pct)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
