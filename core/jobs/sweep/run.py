"""Running (a shard of) the sweep: resolve the parents, run every group (here or on Ray), summarise."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from core.artifacts.card import (
    resolve_model_dir,
)
from core.config import build_config
from core.errors import ConfigError
from core.jobs.sweep.cells import iter_cells
from core.jobs.sweep.config import Group, SweepConfig, parse_shard, plan_groups, shard_groups, sweep_id
from core.jobs.sweep.ledger import Ledger
from core.jobs.sweep.ray_runner import run_groups_on_ray
from core.jobs.train import run_training
from core.store.results import ResultsStore
from core.train.config import TrainConfig
from core.train.parent import Parent, load_parent

log = logging.getLogger(__name__)


def _resolve_parents(cfg: SweepConfig, train_cfg: TrainConfig) -> dict[str, str]:
    """Model -> dense run folder: given, remembered from an earlier run of this sweep, or trained now."""
    given = {}
    for item in cfg.parents:
        model, sep, ref = item.partition("=")
        if not sep or model not in cfg.models:
            raise ConfigError(f"parents entries look like MODEL=RUN_ID with MODEL in {cfg.models}, got {item!r}")
        given[model] = str(resolve_model_dir(ref, models_dir=train_cfg.output_dir))
    memo = Path(cfg.variants_dir) / f"sweep-{sweep_id(cfg)}-parents.json"
    remembered = json.loads(memo.read_text()) if memo.is_file() else {}
    missing = [m for m in cfg.models if m not in given and m not in remembered]
    if missing and parse_shard(cfg.shard)[1] > 1:
        raise ConfigError(f"sharded sweeps need existing dense runs for every model (parents: MODEL=RUN_ID); "
                          f"missing: {', '.join(missing)}")
    for model in missing:
        log.info("training the dense parent for %s", model)
        result = run_training(dataclasses.replace(train_cfg, model=model, db=cfg.db))
        remembered[model] = str(result.run_dir)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(remembered, indent=2))
    return {m: given.get(m) or remembered[m] for m in cfg.models}


def run_group(parent: Parent, group: Group, ledger: Ledger) -> list[str]:
    """Make, measure and store every missing cell of ``group``, each as soon as it is done."""
    todo = ledger.pending(parent.run_id, group)
    if not todo:
        return []
    return [ledger.store(record) for record in iter_cells(parent, group=group, todo=todo, cfg=ledger.cfg)]


def run_sweep(cfg: SweepConfig, *, ray_address: str | None = None, use_ray: bool = False,
              time_on_driver: bool = False) -> pd.DataFrame:
    """Run (this shard of) the sweep; returns the summary of every cell of this sweep in the store.

    With ``use_ray`` every group of cells is a Ray task (``ray_address``: an existing cluster, ``"auto"``, or
    None for a local instance started and stopped here); this process stays the only writer of the store.
    ``time_on_driver`` re-times every new cell here before it is stored, so latency columns are comparable.
    """
    train_cfg = build_config(TrainConfig, yaml_path=cfg.train_config)
    parents = _resolve_parents(cfg, train_cfg)
    groups = shard_groups(plan_groups(cfg), cfg.shard)
    log.info("sweep %s shard %s: %d group(s), %d cell(s)", sweep_id(cfg), cfg.shard, len(groups),
             sum(len(g.modes) for g in groups))
    ledger = Ledger(cfg, time_on_driver=time_on_driver)
    ledger.create()
    if use_ray:
        parent_ids = run_groups_on_ray(parents, groups, ledger, address=ray_address)
    else:
        loaded: dict[str, Parent] = {}
        for group in groups:
            if group.model not in loaded:
                loaded[group.model] = load_parent(parents[group.model])
            run_group(loaded[group.model], group, ledger)
        parent_ids = [p.run_id for p in loaded.values()]
    with ResultsStore(cfg.db, read_only=True) as store:
        return sweep_summary(store, parent_ids)


def sweep_summary(store: ResultsStore, parent_run_ids: list[str]) -> pd.DataFrame:
    """One row per stored cell of these parents: accuracy figures, size, latency, ratios vs dense torch fp32."""
    from core.store.frames import variants_frame

    df = variants_frame(store)
    if df.empty or not parent_run_ids:
        return pd.DataFrame()
    df = df[(df["kind"] == "variant") & df["parent_run_id"].isin(parent_run_ids)]
    df = df.rename(columns={"auc_macro_ovr": "auc", "pruning_ratio": "ratio"})
    df["delta_ci"] = [f"[{lo:+.3f}, {hi:+.3f}]" if pd.notna(lo) else "" for lo, hi in
                      zip(df["bal_acc_delta_ci_low"], df["bal_acc_delta_ci_high"], strict=True)]
    return df[["model", "variant", "accuracy", "balanced_accuracy", "auc", "size_mb", "latency_ms", "ratio",
               "size_x", "speed_x", "size_x_onnx", "speed_x_onnx", "bal_acc_delta", "delta_ci"]
              ].reset_index(drop=True)
