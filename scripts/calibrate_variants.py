"""Calibrate variant folders made before calibration was recorded (temperature + "uncertain" threshold, fitted on
the parent's validation split, written into each card).

    python -m scripts.calibrate_variants results/variants/<parent run id> [--force] [--target-accuracy 0.9]
"""

from __future__ import annotations

import argparse
import sys

from core.artifacts.card import DEFAULT_MODELS_DIR
from core.calibration import DEFAULT_TARGET_ACCURACY
from core.cli import run_cli, script_parser
from core.errors import ConfigError
from core.jobs.calibrate import recalibrate, variant_folders


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Fit the calibration of existing variant folders", add_help=add_help)
    parser.add_argument("folder", help="a variant folder, or a folder of them (results/variants/<run id>)")
    parser.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where the parent runs are")
    parser.add_argument("--target-accuracy", type=float, default=DEFAULT_TARGET_ACCURACY,
                        help="validation accuracy asked of predictions shown without the 'uncertain' flag")
    parser.add_argument("--force", action="store_true", help="refit cards that are already calibrated")
    return parser


def main(args: argparse.Namespace) -> int:
    folders = variant_folders(args.folder)
    if not folders:
        raise ConfigError(f"{args.folder}: no variant folders (model_card.json with a model file) there")
    done = recalibrate(folders, models_dir=args.models_dir, target_accuracy=args.target_accuracy, force=args.force)
    print(f"{'variant':34s} {'T':>6s} {'threshold':>9s} {'val ECE before':>15s} {'after':>6s}")
    for r in done:
        print(f"{r.folder.name:34s} {r.temperature:6.3f} {r.threshold:9.3f} {r.val_ece_before:15.3f} "
              f"{r.val_ece_after:6.3f}")
    print(f"{len(done)} of {len(folders)} variant folders calibrated")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
