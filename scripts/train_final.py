"""Train a cross-validated recipe on train + val (the fixed test split stays out), optionally distilled from
the fold ensemble, and score it on the test split once.

    python -m scripts.train_final --cv <cv id> [--no-distill] [--alpha 0.5 --temperature 2] [--db results/cv.duckdb]
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli, script_parser
from core.jobs.final import train_final
from core.metrics import format_evaluation
from core.store.results import DEFAULT_DB


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Train the cross-validated recipe on train + val, distilled from the fold ensemble",
                           add_help=add_help)
    parser.add_argument("--cv", required=True, help="cross-validation id (under --cv-dir) or its folder")
    parser.add_argument("--cv-dir", default="results/cv", help="folder of cross-validation runs")
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store holding the folds")
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                        help="distil from the fold ensemble (--no-distill: the plain recipe on train + val)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the soft-target term")
    parser.add_argument("--temperature", type=float, default=2.0, help="distillation softening temperature")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's, as cross-validated)")
    parser.add_argument("--output-dir", help="folder of trained-model folders (default: the recipe's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def main(args: argparse.Namespace) -> int:
    result = train_final(args.cv, db=args.db, cv_dir=args.cv_dir, distill=args.distill, alpha=args.alpha,
                         temperature=args.temperature, epochs=args.epochs, output_dir=args.output_dir,
                         device=args.device)
    print(format_evaluation(result.evaluations["test"], title=f"== {result.run_id} [test]"))
    print(f"model folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
