"""The training job: configure and resume a run, prepare its split, fit (the engine in :mod:`core.train.loop`:
AdamW, a cosine or linear-to-zero schedule with warm-up, optional FixRes epochs at a lower size, EMA, early stopping
on validation balanced accuracy, a checkpoint every epoch), evaluate the best weights, and write the run to the
results store once, at the end. Ctrl-C leaves the last complete checkpoint and writes nothing to the store.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from core.artifacts.card import (
    Card,
    atomic_torch_save,
    save_card,
    save_trained_model,
)
from core.classes import CLASSES
from core.config import build_config, save_config
from core.data.prepare import PreparedSplit
from core.data.split import apply_split, load_split, make_split, save_split
from core.data.synthetic import ensure_synthetic_dataset
from core.data.transforms import Preprocessing, preprocessing_for
from core.errors import ConfigError
from core.metrics import Evaluation
from core.models import (
    check_freeze_stages,
    create_model,
)
from core.provenance import Provenance, new_run_id
from core.runtime import resolve_device, seed_everything
from core.serve.facts import card_metrics
from core.store.results import Predictions, ResultsStore, RunRecord
from core.train.config import TrainConfig
from core.train.evaluation import model_logits, score_outputs
from core.train.loaders import check_global_batch
from core.train.loop import fit
from core.train.origin import origin_of
from core.world import World, barrier, broadcast, finish, init_world

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    evaluations: dict[str, Evaluation]
    history: list[dict[str, float]]
    config: TrainConfig




def _resume_state(cfg: TrainConfig) -> tuple[TrainConfig, Path, dict[str, Any]]:
    run_dir = Path(cfg.resume)  # type: ignore[arg-type]
    if not (run_dir / "checkpoint.pth").is_file():
        candidate = Path(cfg.output_dir) / str(cfg.resume)
        if not (candidate / "checkpoint.pth").is_file():
            raise ConfigError(f"nothing to resume at {cfg.resume!r}: no checkpoint.pth there or under {cfg.output_dir}")
        run_dir = candidate
    stored = build_config(TrainConfig, yaml_path=run_dir / "config.yaml")
    stored.resume = str(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=False)
    log.info("resuming %s after epoch %d", run_dir.name, checkpoint["epoch"] + 1)
    return stored, run_dir, checkpoint


def run_training(cfg: TrainConfig) -> TrainResult:
    """Data -> split -> train -> evaluate (val, test) -> store. Returns the run's figures."""
    cfg, run_dir, checkpoint, device, world = _start(cfg)
    run_id = run_dir.name
    model = create_model(cfg.model, pretrained=cfg.pretrained and checkpoint is None, drop_rate=cfg.drop_rate)
    check_freeze_stages(model, cfg.freeze_stages)
    prep = preprocessing_for(model, cfg.img_size)
    split = _prepare_split(cfg, prep=prep, world=world, split_csv=run_dir / "split.csv" if checkpoint else None)
    if checkpoint is None and world.is_main:
        run_dir.mkdir(parents=True, exist_ok=False)
        save_config(cfg, run_dir / "config.yaml")
        save_split(split.table, run_dir / "split.csv")
    log.info("run %s: %s on %s (%d train / %d val / %d test images), split %s, device %s", run_id, cfg.model,
             cfg.data_dir, *(len(split.rows(s)) for s in ("train", "val", "test")), split.hash, device)
    card = _new_card(cfg, run_id=run_id, split=split)

    def on_epoch(epoch: int, improved: bool, state: dict[str, Any]) -> None:
        if not world.is_main:  # one writer of the run folder
            return
        evaluated = state.pop("evaluated")
        state.pop("val_logits")
        if improved:
            save_trained_model(run_dir, evaluated, card)
        atomic_torch_save({**state, "config": asdict(cfg)}, run_dir / "checkpoint.pth")

    try:
        fitted = fit(model, split=split, cfg=cfg, device=device, checkpoint=checkpoint, on_epoch=on_epoch,
                     world=world)
    except KeyboardInterrupt:
        log.warning("interrupted: the last complete epoch's checkpoint is in %s; nothing was written to the "
                    "results store. Resume with --resume %s", run_dir, run_dir)
        raise
    history = fitted.history
    barrier(world)
    if not world.is_main:  # rank 0 evaluates, calibrates and stores the run
        finish(world)
        return TrainResult(run_id, run_dir, {}, history, cfg)
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    evaluations, predictions = _evaluate_best(run_dir, model=model, split=split, cfg=cfg, device=device, card=card)
    _store(cfg, run_dir=run_dir, split=split, device=device, evaluations=evaluations, history=history,
           predictions=predictions)
    finish(world)
    return TrainResult(run_id, run_dir, evaluations, history, cfg)


def _start(cfg: TrainConfig) -> tuple[TrainConfig, Path, dict[str, Any] | None, torch.device, World]:
    """The run's folder (new, or the one resumed with its checkpoint), seeds, threads, device and process world."""
    checkpoint: dict[str, Any] | None = None
    if cfg.resume:
        cfg, run_dir, checkpoint = _resume_state(cfg)
    else:
        run_dir = Path(cfg.output_dir) / new_run_id(cfg.model)  # rank 0's, on every rank (below)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    world = init_world(device.type)
    check_global_batch(cfg, world)  # before anything is written
    if world.distributed:
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
        if checkpoint is None:
            run_dir = Path(cfg.output_dir) / broadcast(world, run_dir.name)
    return cfg, run_dir, checkpoint, device, world


def _prepare_split(cfg: TrainConfig, *, prep: Preprocessing, world: World, split_csv: Path | None) -> PreparedSplit:
    """The dataset decoded for ``prep`` and split: a resumed run's stored split, a given split file, or a new
    lesion-grouped one. Rank 0 generates and caches first; the other ranks then read what it wrote."""
    for turn in ("main", "others"):
        if (turn == "main") == world.is_main:
            if cfg.synthetic:
                ensure_synthetic_dataset(cfg.data_dir, num_images=cfg.synthetic_images, seed=cfg.seed)
            data = cfg.prepare(prep)
        barrier(world)
    if split_csv is not None:
        table = apply_split(data.table, load_split(split_csv))
    elif cfg.split_file:
        table = apply_split(data.table, load_split(cfg.split_file))
    else:
        table = make_split(data.table, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    return PreparedSplit(data, table, prep)


def _new_card(cfg: TrainConfig, *, run_id: str, split: PreparedSplit) -> Card:
    return Card(run_id=run_id, architecture=cfg.model, preprocessing=split.prep, classes=CLASSES,
                drop_rate=cfg.drop_rate, origin=origin_of(cfg, split=split))


def _store(cfg: TrainConfig, *, run_dir: Path, split: PreparedSplit, device: torch.device,
           evaluations: dict[str, Evaluation], history: list[dict[str, float]],
           predictions: dict[str, Predictions]) -> None:
    """One atomic results-store write for the finished run."""
    provenance = Provenance.here(dataset=cfg.data_dir, dataset_fingerprint=split.data.fingerprint,
                                 split_hash=split.hash, seed=cfg.seed, device=device)
    record = RunRecord(run_id=run_dir.name, kind="train", model=cfg.model, variant=cfg.variant, config=asdict(cfg),
                       provenance=provenance, evaluations=evaluations, history=history, predictions=predictions,
                       artifacts={"weights": run_dir / "model.pt", "config": run_dir / "config.yaml",
                                  "split": run_dir / "split.csv"})
    with ResultsStore(cfg.db) as store:
        store.record_run(record)


def _evaluate_best(run_dir: Path, *, model: nn.Module, split: PreparedSplit, cfg: TrainConfig, device: torch.device,
                   card: Card) -> tuple[dict[str, Evaluation], dict[str, Predictions]]:
    """Score the selected weights on val and test with probabilities calibrated on val (recorded in the card)."""
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    outputs = {name: model_logits(model, split.loader(name, batch_size=cfg.batch_size * 2), device,
                                  channels_last=cfg.channels_last) for name in ("val", "test")}
    card.calibrate(*outputs["val"], target_accuracy=cfg.uncertain_target_accuracy)
    log.info("calibrated on val: temperature %.3f, uncertain below confidence %.3f (target accuracy %.2f)",
             card.temperature, card.uncertain_threshold, cfg.uncertain_target_accuracy)
    evaluations, predictions = score_outputs(card, {name: (split.rows(name), logits)
                                                    for name, (logits, _) in outputs.items()})
    card.metrics = card_metrics(evaluations)
    save_card(run_dir, card)
    return evaluations, predictions
