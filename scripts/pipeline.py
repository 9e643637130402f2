"""The main job: data -> split -> train -> evaluate -> store -> summary.

    python -m scripts.pipeline -c configs/demo.yaml

With ``synthetic: true`` the embedded synthetic dataset is generated first (the ``make demo`` path);
``--sweep configs/sweep-demo.yaml`` then prunes, quantizes, sizes and times the trained model.
The summary is read back from the results store, so what it prints is what was stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from core.artifacts.card import variant_folders
from core.cli import config_parser, run_cli
from core.config import build_config, config_from_args
from core.jobs.sweep import SweepConfig, run_sweep, sweep_summary
from core.jobs.train import run_training
from core.store.results import ResultsStore
from core.store.summary import run_summary
from core.train.config import TrainConfig


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = config_parser("Run the LesionLite pipeline", TrainConfig, add_help=add_help)
    parser.add_argument("--sweep", help="then run this sweep config (SweepConfig YAML) on the trained model")
    parser.add_argument("--workdir", help="put everything this run writes under one folder: models/, cache/, "
                                          "variants/ and results.duckdb (overrides --output-dir, --cache-dir, --db "
                                          "and the sweep's variants_dir)")
    return parser


def workdir_overrides(workdir: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(training overrides, sweep overrides) that keep all of a run's outputs under ``workdir``."""
    if not workdir:
        return {}, {}
    root = Path(workdir)
    db = str(root / "results.duckdb")
    return ({"output_dir": str(root / "models"), "cache_dir": str(root / "cache"), "db": db},
            {"variants_dir": str(root / "variants"), "db": db})


def synthetic_data_dir(cfg: TrainConfig, workdir: str | None) -> dict[str, str]:
    """With --workdir, generated synthetic data goes there too (a given real data_dir is left alone)."""
    if workdir and cfg.synthetic and cfg.data_dir == TrainConfig.data_dir:
        return {"data_dir": str(Path(workdir) / "synthetic")}
    return {}


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    train_dirs, sweep_dirs = workdir_overrides(args.workdir)
    cfg = config_from_args(TrainConfig, args)
    cfg = dataclasses.replace(cfg, **train_dirs, **synthetic_data_dir(cfg, args.workdir))
    result = run_training(cfg)
    variants = None
    if args.sweep:
        sweep_cfg = build_config(SweepConfig, yaml_path=args.sweep,
                                 overrides={"models": [cfg.model], "parents": [f"{cfg.model}={result.run_dir}"],
                                            "db": cfg.db, **sweep_dirs})
        run_sweep(sweep_cfg)
        variants = Path(sweep_cfg.variants_dir) / result.run_id
    with ResultsStore(cfg.db, read_only=True) as store:
        print(run_summary(store, result.run_id))
        if args.sweep:
            print("\ncompression sweep (test split; ratios against the dense PyTorch fp32 model, same run):")
            print(sweep_summary(store, [result.run_id]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nmodel folder: {result.run_dir}\nresults store: {cfg.db}")
    if variants is not None:
        print(f"variant folders ({variants}):")
        print("\n".join(f"  {folder}" for folder in variant_folders(variants)))
        print(f"serve one: LESIONLITE_VARIANT={variants / 'dense-static'} make webapp   "
              f"(or LESIONLITE_DB={cfg.db}: the best static int8 cell on validation)")
    print(f"dashboard on this store: .venv/bin/python -m streamlit run dashboard/app.py -- --db {cfg.db}")
    print(f"pipeline finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
