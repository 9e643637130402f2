"""Train one model: ``python -m scripts.train -c configs/demo.yaml [--flag value ...]``.

Flags override the YAML config; every key of :class:`core.train.config.TrainConfig` is a flag.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import config_parser, run_cli
from core.config import config_from_args
from core.jobs.train import run_training
from core.metrics import format_evaluation
from core.train.config import TrainConfig


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = config_parser("Train a skin-lesion classifier", TrainConfig, add_help=add_help)
    return parser


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(TrainConfig, args)
    result = run_training(cfg)
    for split, ev in result.evaluations.items():
        print(format_evaluation(ev, title=f"== {result.run_id} [{split}]"))
    print(f"model folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
