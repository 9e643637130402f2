"""One deployable model from a cross-validated recipe: trained on every non-test image (train + val) for the
recipe's fixed epoch count, optionally distilled from the k fold models' ensemble.

Neither this model nor the ensemble has an out-of-fold score (every labelled image trained them), so the fixed
test split is where they are compared with the plain recipe, once. The teacher is the ensemble's averaged
temperature-scaled probabilities, computed on the same augmented batch the student sees (a consistent teacher).
There is no validation split left to calibrate on: the card takes the mean of the fold models' temperatures (each
fitted on its own held-out fold), and its "uncertain" threshold and screening operating points are fitted on the
cross-validation's out-of-fold probabilities (every labelled image, scored by the fold model that did not train on
it), and says so. Sweep cells of this model inherit them (core.jobs.sweep.cells).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.artifacts.card import Card, atomic_torch_save, load_trained_model, save_trained_model
from core.artifacts.records import Calibration
from core.calibration import uncertain_threshold
from core.classes import CLASSES
from core.compress.distill import Distillation
from core.config import save_config
from core.data.folds import all_labelled_split, folds_hash
from core.data.prepare import PreparedSplit
from core.data.split import save_split
from core.errors import ConfigError
from core.jobs.cv import CVConfig, CVContext, fold_run_id, open_cv
from core.jobs.screen import cv_held_out
from core.metrics import Evaluation
from core.models import create_model
from core.provenance import Provenance, new_run_id
from core.serve.facts import card_metrics
from core.store.results import ResultsStore, RunRecord
from core.train.config import TrainConfig
from core.train.evaluation import model_logits, score_outputs
from core.train.loop import fit
from core.train.origin import origin_of
from core.triage import Triage, fit_triage

log = logging.getLogger(__name__)


class EnsembleTeacher(nn.Module):
    """Frozen models averaged: the log of the mean of their temperature-scaled softmax outputs."""

    def __init__(self, members: list[nn.Module], temperatures: list[float]):
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ConfigError("an ensemble needs at least one member and one temperature per member")
        self.members = nn.ModuleList(members)
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([(m(images).float() / t).softmax(1) for m, t in zip(self.members, self.temperatures,
                                                                                strict=True)])
        return probs.mean(0).clamp_min(1e-12).log()


def load_fold_ensemble(cv_folder: Path, k: int) -> tuple[EnsembleTeacher, list[Card]]:
    """The k fold models of a cross-validation folder (every fold must be finished) and their cards."""
    members, cards = [], []
    for fold in range(k):
        folder = cv_folder / f"fold{fold}"
        if not (folder / "model.pt").is_file():
            raise ConfigError(f"fold {fold} of {cv_folder.name} has no finished model; finish the "
                              f"cross-validation first (scripts.cv --cv-resume {cv_folder.name})")
        model, card, _ = load_trained_model(folder)
        members.append(model)
        cards.append(card)
    return EnsembleTeacher(members, [c.temperature for c in cards]), cards


@dataclass
class FinalResult:
    run_id: str
    run_dir: Path
    evaluations: dict[str, Evaluation]


def train_final(cv_ref: str, *, db: str, cv_dir: str = "results/cv", distill: bool = True,
                alpha: float = 0.5, temperature: float = 2.0, epochs: int | None = None,
                output_dir: str | None = None, device: str = "auto") -> FinalResult:
    """Train the cross-validated recipe on train + val; with ``distill``, against the fold ensemble."""
    recipe = TrainConfig(db=db, device=device)
    ctx = open_cv(recipe, CVConfig(cv_dir=cv_dir, cv_resume=cv_ref))
    cfg = replace(ctx.recipe, epochs=epochs or ctx.recipe.epochs, patience=0,
                  output_dir=output_dir or ctx.recipe.output_dir, db=db)
    _require_stored_folds(ctx, db)
    teacher, fold_cards = load_fold_ensemble(ctx.folder, ctx.cv.folds)
    variant = "student" if distill else "final"
    table = all_labelled_split(ctx.folds)
    split = PreparedSplit(ctx.data, table, ctx.prep)
    run_id = new_run_id(cfg.model, kind=variant)
    run_dir = Path(cfg.output_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    save_config(cfg, run_dir / "config.yaml")
    save_split(table, run_dir / "split.csv")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, pretrained=cfg.pretrained, drop_rate=cfg.drop_rate)
    distillation = Distillation(teacher, alpha=alpha, temperature=temperature) if distill else None
    log.info("%s %s: %s on %d images (train + val of cross-validation %s) for %d epochs%s", variant, run_id,
             cfg.model, len(split.rows("train")), ctx.cv_id, cfg.epochs,
             f", distilled from the {ctx.cv.folds}-fold ensemble (alpha {alpha}, T {temperature})" if distill else "")

    def on_epoch(epoch: int, improved: bool, state: dict[str, Any]) -> None:
        state.pop("evaluated"), state.pop("val_logits")
        atomic_torch_save({**state, "config": asdict(cfg)}, run_dir / "checkpoint.pth")

    fitted = fit(model, split=split, cfg=cfg, device=ctx.device, on_epoch=on_epoch, distillation=distillation,
                 select_best=False)
    taught_by = ({"teacher": f"{ctx.cv.folds}-fold ensemble of {ctx.cv_id}", "alpha": alpha,
                  "temperature": temperature} if distill else None)
    calibration, triage = cv_calibration(ctx, db=db, fold_cards=fold_cards,
                                         target_accuracy=cfg.uncertain_target_accuracy)
    card = Card(run_id=run_id, architecture=cfg.model, preprocessing=ctx.prep, classes=CLASSES, variant=variant,
                drop_rate=cfg.drop_rate, calibration=calibration, triage=triage,
                origin=origin_of(cfg, split=split, cv_id=ctx.cv_id, folds_hash=folds_hash(ctx.folds),
                                 distillation=taught_by))
    config = {**asdict(cfg), "cv_id": ctx.cv_id, "distill": distill, "distill_alpha": alpha,
              "distill_temperature": temperature}
    evaluations = _score_and_store(model, card=card, ctx=ctx, cfg=cfg, split=split, run_dir=run_dir,
                                   history=fitted.history, config=config)
    return FinalResult(run_id, run_dir, evaluations)


def _require_stored_folds(ctx: CVContext, db: str) -> None:
    with ResultsStore(db, read_only=True) as store:
        missing = [i for i in range(ctx.cv.folds) if not store.has_run(fold_run_id(ctx.cv_id, i))]
    if missing:
        raise ConfigError(f"cross-validation {ctx.cv_id} has fold(s) {missing} not stored in {db}; "
                          f"finish it first (scripts.cv --cv-resume {ctx.cv_id})")


def cv_calibration(ctx: CVContext, *, db: str, fold_cards: list[Card], target_accuracy: float
                   ) -> tuple[Calibration, Triage | None]:
    """A model refit on every labelled image has no validation split: its temperature is the mean of the fold
    models' (each fitted on its held-out fold); its "uncertain" threshold and screening operating points are fitted
    on the cross-validation's out-of-fold probabilities (calibrated by each fold's temperature)."""
    with ResultsStore(db, read_only=True) as store:
        pooled = cv_held_out(store, ctx.cv_id, ctx.cv.folds)
    fitted_on = f"out-of-fold predictions of {ctx.cv_id} ({len(pooled.labels)} images)"
    try:
        triage = fit_triage(pooled.labels, pooled.probs, fitted_on=fitted_on)
    except ValueError as exc:  # tiny synthetic folds
        log.warning("no screening operating point from the out-of-fold predictions: %s", exc)
        triage = None
    return Calibration(temperature=float(np.mean([c.temperature for c in fold_cards])),
                       uncertain_threshold=uncertain_threshold(pooled.labels, pooled.probs,
                                                               target_accuracy=target_accuracy),
                       fitted_on=fitted_on, target_accuracy=target_accuracy,
                       notes={"temperature": "mean of the fold models' held-out fits"}), triage


def _score_and_store(model: nn.Module, *, card: Card, ctx: CVContext, cfg: TrainConfig, split: PreparedSplit,
                     run_dir: Path, history: list[dict[str, float]], config: dict[str, Any]
                     ) -> dict[str, Evaluation]:
    """Score on the test folds once, write the model with its card, and store the run."""
    logits, _ = model_logits(model, split.loader("test", batch_size=cfg.batch_size * 2), ctx.device)
    evaluations, predictions = score_outputs(card, {"test": (split.rows("test"), logits)})
    card.metrics = card_metrics(evaluations)
    save_trained_model(run_dir, model, card)
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    provenance = Provenance.here(dataset=cfg.data_dir, dataset_fingerprint=ctx.data.fingerprint,
                                 split_hash=split.hash, seed=cfg.seed, device=ctx.device)
    record = RunRecord(run_id=card.run_id, kind="train", model=cfg.model, variant=card.variant, config=config,
                       provenance=provenance, evaluations=evaluations, history=history,
                       predictions=predictions,
                       artifacts={"weights": run_dir / "model.pt", "config": run_dir / "config.yaml",
                                  "split": run_dir / "split.csv"})
    with ResultsStore(cfg.db) as store:
        store.record_run(record)
    return evaluations
