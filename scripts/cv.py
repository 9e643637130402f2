"""Cross-validate a training recipe: k lesion-grouped folds over train + val, every image scored out of fold.

    python -m scripts.cv -c configs/ham10000-cpu.yaml [--folds 5] [any training flag]
    python -m scripts.cv --cv-resume <cv id>          # continue after an interruption, fold by fold

Prints each fold's held-out figures as it finishes, then the pooled out-of-fold figures with their 95%
lesion-level bootstrap intervals, TTA's paired gain, and the out-of-fold learning curve. The fold ensemble's
test-split figures are stored with the summary (look at them once, after the recipe is chosen).
"""

from __future__ import annotations

import argparse
import sys

from core.cli import config_parser, run_cli
from core.config import add_config_args, build_config
from core.jobs.cv import CVConfig, run_cv
from core.store.results import ResultsStore
from core.store.summary import cv_summary
from core.train.config import TrainConfig


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = config_parser("Cross-validate a training recipe (lesion-grouped folds, out-of-fold scores)",
                           TrainConfig, add_help=add_help)
    add_config_args(parser, CVConfig)
    return parser


def main(args: argparse.Namespace) -> int:
    given = vars(args)
    cv = build_config(CVConfig, overrides={k: v for k, v in given.items() if k in CVConfig.__dataclass_fields__})
    recipe = build_config(TrainConfig, yaml_path=args.config,
                          overrides={k: v for k, v in given.items() if k in TrainConfig.__dataclass_fields__})
    result = run_cv(recipe, cv)
    print(f"cross-validation {result.cv_id}: folds stored {result.folds_done} in {result.folder}")
    if result.complete:
        with ResultsStore(recipe.db, read_only=True) as store:
            print(cv_summary(store, result.cv_id).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
