"""The driver: every fold not yet stored, then the summary once all are."""

from __future__ import annotations

import logging
from pathlib import Path

from core.jobs.cv.context import CVConfig, CVResult, fold_run_id, open_cv
from core.jobs.cv.fold import EpochsLeft, epochs_done, run_fold
from core.jobs.cv.ray import run_folds_on_ray
from core.jobs.cv.summary import summarise
from core.store.results import ResultsStore
from core.train.config import TrainConfig

log = logging.getLogger(__name__)


def run_cv(recipe: TrainConfig, cv: CVConfig) -> CVResult:
    """Train and score every fold not yet stored; store the summary once all are. Returns what is done."""
    ctx = open_cv(recipe, cv)
    wanted = ctx.cv.only_folds or list(range(ctx.cv.folds))
    with ResultsStore(ctx.recipe.db, read_only=Path(ctx.recipe.db).is_file()) as store:
        stored = {i for i in range(ctx.cv.folds) if store.has_run(fold_run_id(ctx.cv_id, i))}
    todo = [i for i in wanted if i not in stored]
    epochs_left = sum(ctx.recipe.epochs - epochs_done(ctx.folder / f"fold{i}") for i in todo)
    log.info("cross-validation %s: %d folds, %d stored, %d to run now (%d epochs)", ctx.cv_id, ctx.cv.folds,
             len(stored), len(todo), epochs_left)
    if ctx.cv.ray:
        records = run_folds_on_ray(ctx, todo, address=ctx.cv.ray)
    else:
        eta = EpochsLeft(epochs_left)
        records = (run_fold(ctx, fold, eta) for fold in todo)
    for record in records:
        fold = record.config["cv"]["fold"]
        with ResultsStore(ctx.recipe.db) as store:  # opened only to write: a fold trains for many minutes
            store.record_run(record)
        stored.add(fold)
        ev = record.evaluations["oof"].metrics
        log.info("fold %d: held-out balanced accuracy %.3f [%.3f, %.3f], melanoma recall %.3f", fold,
                 ev["balanced_accuracy"], ev["balanced_accuracy_ci_low"], ev["balanced_accuracy_ci_high"],
                 ev["mel_recall"])
    result = CVResult(ctx.cv_id, ctx.folder, sorted(stored), folds=ctx.cv.folds)
    if len(stored) < ctx.cv.folds:
        log.info("%d of %d folds stored; continue with --cv-resume %s", len(stored), ctx.cv.folds, ctx.cv_id)
        return result
    with ResultsStore(ctx.recipe.db) as store:
        if store.has_run(ctx.cv_id):
            log.info("summary of %s already stored", ctx.cv_id)
        else:
            record, result.curve = summarise(ctx, store)
            store.record_run(record)
            result.evaluations = record.evaluations
    return result
