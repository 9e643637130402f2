"""One fold: trained on the other folds (resumable from its last epoch's checkpoint), scored on its own fold
and on test, returned as a run record."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.artifacts.card import Card, atomic_torch_save, save_trained_model
from core.classes import CLASSES
from core.config import save_config
from core.data.folds import fold_split
from core.data.prepare import PreparedSplit
from core.data.split import save_split
from core.jobs.cv.context import CVContext, fold_run_id
from core.models import create_model
from core.provenance import Provenance
from core.runtime import seed_everything
from core.store.results import RunRecord
from core.train.evaluation import model_logits, score_outputs
from core.train.loop import fit
from core.train.origin import origin_of

log = logging.getLogger(__name__)


class EpochsLeft:
    """Progress over every epoch still to run in this command, with an estimate of the time left."""

    def __init__(self, epochs_left: int):
        self.left, self.done, self.start = epochs_left, 0, time.perf_counter()

    def tick(self, what: str) -> None:
        self.done += 1
        per_epoch = (time.perf_counter() - self.start) / self.done
        remaining = (self.left - self.done) * per_epoch
        log.info("%s done; %d/%d epochs of this command, ETA %dm%02ds", what, self.done, self.left,
                 remaining // 60, remaining % 60)


def write_fold_run_files(ctx: CVContext, fold: int) -> Path:
    """Make a fold's folder a complete trained-run folder (its recipe as ``config.yaml``, its split as
    ``split.csv``: the held-out fold as val), so it can be a sweep's parent: paired differences are then taken on
    the held-out fold (out of fold) and the test split."""
    fold_dir = ctx.folder / f"fold{fold}"
    save_config(ctx.recipe, fold_dir / "config.yaml")
    save_split(fold_split(ctx.folds, fold), fold_dir / "split.csv")
    return fold_dir


def _checkpoint_path(fold_dir: Path) -> Path:
    return fold_dir / "checkpoint.pth"


def fold_checkpoint(fold_dir: Path) -> dict[str, Any] | None:
    path = _checkpoint_path(fold_dir)
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def epochs_done(fold_dir: Path) -> int:
    """How many epochs a fold's checkpoint has finished (0: none). Memory-mapped: the driver reads the epoch, not
    the ~70 MB of weights and optimizer state that the fold itself loads when it resumes."""
    path = _checkpoint_path(fold_dir)
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1


def run_fold(ctx: CVContext, fold: int, eta: EpochsLeft | None = None) -> RunRecord:
    """Train fold ``fold``'s model on the other folds and score it on its own fold and on test."""
    recipe, fold_dir = ctx.recipe, ctx.folder / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    split = PreparedSplit(ctx.data, fold_split(ctx.folds, fold), ctx.prep)
    checkpoint = fold_checkpoint(fold_dir)
    seed_everything(recipe.seed + fold)
    model = create_model(recipe.model, pretrained=recipe.pretrained and checkpoint is None,
                         drop_rate=recipe.drop_rate)
    epoch_logits: list[np.ndarray] = list(checkpoint["oof_logits"]) if checkpoint else []
    log.info("fold %d/%d of %s: %d train / %d held-out images%s", fold + 1, ctx.cv.folds, ctx.cv_id,
             len(split.rows("train")), len(split.rows("val")),
             f", resuming after epoch {checkpoint['epoch'] + 1}" if checkpoint else "")

    def on_epoch(epoch: int, improved: bool, state: dict[str, Any]) -> None:
        state.pop("evaluated")
        epoch_logits.append(state.pop("val_logits"))
        atomic_torch_save({**state, "oof_logits": epoch_logits}, _checkpoint_path(fold_dir))
        if eta is not None:
            eta.tick(f"fold {fold + 1}/{ctx.cv.folds} epoch {epoch + 1}/{recipe.epochs}")

    fitted = fit(model, split=split, cfg=recipe, device=ctx.device, checkpoint=checkpoint, on_epoch=on_epoch,
                 select_best=False)
    held = split.rows("val")
    outputs = _fold_outputs(model, ctx=ctx, split=split, oof_logits=epoch_logits[-1])
    card = Card(run_id=fold_run_id(ctx.cv_id, fold), architecture=recipe.model, preprocessing=ctx.prep,
                classes=CLASSES, variant=f"fold{fold}", drop_rate=recipe.drop_rate,
                origin=origin_of(recipe, split=split, cv_id=ctx.cv_id, fold=fold))
    card.calibrate(epoch_logits[-1], held["label"].to_numpy(), fitted_on="held-out fold")
    save_trained_model(fold_dir, model, card)
    write_fold_run_files(ctx, fold)
    np.savez_compressed(fold_dir / "oof_epochs.npz", logits=np.stack(epoch_logits),
                        image_ids=held["image_id"].to_numpy(dtype=str), labels=held["label"].to_numpy())
    evaluations, predictions = score_outputs(card, outputs)
    provenance = Provenance.here(dataset=recipe.data_dir, dataset_fingerprint=ctx.data.fingerprint,
                                 split_hash=split.hash, seed=recipe.seed, device=ctx.device)
    return RunRecord(run_id=fold_run_id(ctx.cv_id, fold), kind="cv_fold", model=recipe.model,
                     variant=f"fold{fold}", config={**asdict(recipe), "cv": {**asdict(ctx.cv), "cv_id": ctx.cv_id,
                                                                              "fold": fold}},
                     provenance=provenance, evaluations=evaluations, history=fitted.history,
                     predictions=predictions, artifacts={"weights": fold_dir / "model.pt"})


def _fold_outputs(model: torch.nn.Module, *, ctx: CVContext, split: PreparedSplit, oof_logits: np.ndarray
                  ) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The fold model's logits with the rows they score: its held-out fold (``oof``, from the last epoch) and test,
    each also with test-time augmentation where the cross-validation asks for it."""
    recipe = ctx.recipe
    held, test = split.rows("val"), split.rows("test")
    loader = {"oof": split.loader("val", batch_size=recipe.batch_size * 2),
              "test": split.loader("test", batch_size=recipe.batch_size * 2)}
    outputs = {"oof": (held, oof_logits),
               "test": (test, model_logits(model, loader["test"], ctx.device, channels_last=recipe.channels_last)[0])}
    if ctx.cv.tta:
        for name, rows in (("oof", held), ("test", test)):
            outputs[f"{name}_tta"] = (rows, model_logits(model, loader[name], ctx.device,
                                                         channels_last=recipe.channels_last, tta=True)[0])
    return outputs
