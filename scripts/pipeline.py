"""The main job: data -> split -> train -> evaluate -> store -> summary.

    python -m scripts.pipeline -c configs/demo.yaml

With ``synthetic: true`` the embedded synthetic dataset is generated first (the ``make demo`` path);
``--sweep configs/sweep-demo.yaml`` then prunes, quantizes, sizes and times the trained model.
The summary is read back from the results store, so what it prints is what was stored.
"""

from __future__ import annotations

import argparse
import sys
import time

from core.cli import config_parser, run_cli
from core.config import build_config, config_from_args
from core.jobs.sweep import SweepConfig, run_sweep, sweep_summary
from core.jobs.train import TrainConfig, run_training
from core.store.results import ResultsStore
from core.store.summary import run_summary


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = config_parser("Run the LesionLite pipeline", TrainConfig, add_help=add_help)
    parser.add_argument("--sweep", help="then run this sweep config (SweepConfig YAML) on the trained model")
    return parser


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cfg = config_from_args(TrainConfig, args)
    result = run_training(cfg)
    if args.sweep:
        sweep_cfg = build_config(SweepConfig, yaml_path=args.sweep,
                                 overrides={"models": [cfg.model], "parents": [f"{cfg.model}={result.run_dir}"],
                                            "db": cfg.db})
        run_sweep(sweep_cfg)
    with ResultsStore(cfg.db, read_only=True) as store:
        print(run_summary(store, result.run_id))
        if args.sweep:
            print("\ncompression sweep (test split; ratios against the dense PyTorch fp32 model, same run):")
            print(sweep_summary(store, [result.run_id]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nmodel folder: {result.run_dir}\nresults store: {cfg.db}\n"
          f"pipeline finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
