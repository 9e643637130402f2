"""Upgrade model folders and results stores of earlier LesionLite versions, once (see core.jobs.upgrade).

    python -m scripts.upgrade_artifacts results/models results/cv results/variants --db results/results.duckdb
"""

from __future__ import annotations

import argparse
import sys

from core.artifacts.card import DEFAULT_MODELS_DIR
from core.calibration import DEFAULT_TARGET_ACCURACY
from core.cli import run_cli, script_parser
from core.errors import ConfigError
from core.jobs.upgrade import upgrade_folders, upgrade_gates, upgrade_store


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = script_parser("Rewrite cards and stores of earlier versions in the current format", add_help=add_help)
    parser.add_argument("folders", nargs="*", help="folders searched (recursively) for cards of earlier versions")
    parser.add_argument("--db", action="append", default=[], help="a results store to upgrade (repeatable)")
    parser.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where parent runs are looked up")
    parser.add_argument("--target-accuracy", type=float, default=DEFAULT_TARGET_ACCURACY,
                        help="variants never calibrated: validation accuracy asked of predictions shown without "
                             "the 'uncertain' flag")
    return parser


def main(args: argparse.Namespace) -> int:
    if not args.folders and not args.db:
        raise ConfigError("nothing to upgrade: give folders and/or --db stores")
    upgraded = [u for folder in args.folders
                for u in upgrade_folders(folder, models_dir=args.models_dir, target_accuracy=args.target_accuracy)]
    for u in upgraded:
        print(f"{u.kind:8s} {u.folder}{'  (calibrated now)' if u.calibrated else ''}")
    print(f"{len(upgraded)} folder(s) upgraded, {sum(u.calibrated for u in upgraded)} of them calibrated now")
    gates = [g for folder in args.folders for g in upgrade_gates(folder)]
    print(f"{len(gates)} gate file(s) upgraded")
    for db in args.db:
        changed = upgrade_store(db)
        print(f"{db}: {changed['artifact_paths']} artifact path(s), {changed['families']} family name(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
