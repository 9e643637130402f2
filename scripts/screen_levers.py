"""Screen levers on one cross-validation fold: each lever's held-out figures minus the control's, paired.

    python -m scripts.screen_levers --db results/screen.duckdb --control <cv id>-fold0 \\
        --levers <cv id>-fold0 ... --data ../shared/data/ham10000 [--out results/screen-fold0.csv]

A lever run is a ``scripts.cv --only-folds 0`` run of another recipe on the same fold assignment. Every run also
gets the post-hoc levers (``core.fusion``: a balanced-accuracy logit bias, the fusion model without metadata, and
metadata late fusion with age, sex and body site), fitted nested over lesions on its own held-out predictions.
Prints one row per lever: its figures, lever minus control with a 95% interval over lesions, the training minutes
of its epochs, and per-class recall. ``--out`` also writes the table as CSV with the store's provenance columns.
``--archive results/screening`` keeps each run's predictions and provenance there (Parquet + JSON, committed): a
later session, on a fresh machine, screens a new lever against them without training the control again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.cli import run_cli, script_parser, write_table
from core.fusion import LEVERS
from core.jobs.screen import archive_runs, paired_columns, screen
from core.store.results import DEFAULT_DB, ResultsStore


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Screen levers on one fold: paired out-of-fold differences against a control",
                           add_help=add_help)
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store (read-only)")
    parser.add_argument("--control", required=True, help="run id of the control recipe's fold run (fold runs joined "
                        "by ',' are pooled: post-hoc levers on a whole cross-validation)")
    parser.add_argument("--levers", nargs="*", default=[], help="run ids of the levers' fold runs (same fold)")
    parser.add_argument("--data", required=True, help="the dataset folder (metadata: lesion ids, age, sex, site)")
    parser.add_argument("--split", default="oof", help="stored split to compare (oof: the held-out fold)")
    parser.add_argument("--posthoc", nargs="*", default=list(LEVERS), choices=list(LEVERS),
                        help="post-hoc levers fitted nested on every run")
    parser.add_argument("--out", help="also write the table here as CSV")
    parser.add_argument("--archive", help="folder of archived runs (Parquet + JSON): read runs missing from the "
                                          "store there, and write the control's and levers' there")
    return parser


def main(args: argparse.Namespace) -> int:
    archive = Path(args.archive) if args.archive else None
    with ResultsStore(args.db, read_only=True) as store:
        table = screen(store, control=args.control, levers=args.levers, data_dir=args.data, split=args.split,
                       posthoc=tuple(args.posthoc), archive=archive)
        if archive is not None:
            present = [r for r in [args.control, *args.levers] if store.has_run(r)]
            for path in archive_runs(store, present, archive):
                print(f"archived: {path}")
    shown = ["on", "lever", "images", "train_minutes",
             *paired_columns()]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(f"control = {args.control}; deltas are lever minus control on the same images, 95% intervals over "
              "lesions (2,000 replicates)")
        print(table[shown].to_string(index=False))
        print(table[["on", "lever", *[c for c in table.columns if c.startswith("recall_")]]].to_string(index=False))
        own = [c for c in table.columns if c.startswith("metadata_own_delta_")]
        if own:
            print("what the metadata adds by itself (metadata fusion minus the same model without it, paired):")
            print(table.loc[table["lever"] == "metadata_fusion", ["on", *own]].to_string(index=False))
    write_table(table, args.out, control=args.control, split=args.split)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
