"""Train one model: ``python -m scripts.train -c configs/demo.yaml [--flag value ...]``.

Flags override the YAML config; every key of :class:`core.train.TrainConfig` is a flag.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import run_cli
from core.config import add_config_args, config_from_args
from core.metrics import format_evaluation
from core.train import TrainConfig, run_training


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a skin-lesion classifier", add_help=add_help)
    parser.add_argument("-c", "--config", help="YAML config (defaults for every flag below)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_config_args(parser, TrainConfig)
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
