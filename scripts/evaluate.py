"""Evaluate a trained model on any dataset folder (HAM10000 or ISIC 2018 Task 3 layout; every image is test).

    python -m scripts.evaluate --model <run_id or folder> --data <folder> [--submission out.csv]
"""

from __future__ import annotations

import argparse
import sys

from core.artifacts.card import DEFAULT_MODELS_DIR
from core.cli import run_cli, script_parser
from core.data.cache import DEFAULT_CACHE_DIR
from core.jobs.evaluate import evaluate_on_folder
from core.metrics import format_evaluation
from core.store.results import DEFAULT_DB


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Evaluate a trained model on a dataset folder", add_help=add_help)
    parser.add_argument("--model", required=True,
                        help="run id (under --models-dir), trained-model folder or variant folder")
    parser.add_argument("--data", required=True, help="dataset folder (HAM10000 or ISIC 2018 Task 3 layout)")
    parser.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where run ids are looked up")
    parser.add_argument("--db", default=str(DEFAULT_DB), help="DuckDB results store")
    parser.add_argument("--no-store", action="store_true", help="print only; do not store the result")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="decoded-image cache folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted and logged)")
    parser.add_argument("--submission", help="also write an ISIC 2018 Task 3 submission CSV here")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (mean of image and mirror)")
    return parser


def main(args: argparse.Namespace) -> int:
    result = evaluate_on_folder(args.model, args.data, models_dir=args.models_dir,
                                db=None if args.no_store else args.db, cache_dir=args.cache_dir,
                                batch_size=args.batch_size, skip_bad=args.skip_bad, submission=args.submission,
                                workers=args.workers, tta=args.tta)
    print(format_evaluation(result.evaluation, title=f"== {result.model_run_id} on {args.data} "
                                                      f"({len(result.image_ids)} images)"))
    if not args.no_store:
        print(f"stored as run {result.run_id} in {args.db}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
