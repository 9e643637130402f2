"""The folds as Ray tasks (one machine or a cluster); the driver stays the only writer of the store."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from core.jobs.cv.context import CVConfig, CVContext, open_cv
from core.jobs.cv.fold import run_fold
from core.ray_pool import ray_map
from core.store.results import RunRecord
from core.train.config import TrainConfig

log = logging.getLogger(__name__)


def fold_task(*, recipe: TrainConfig, folder: str, fold: int) -> RunRecord:
    """Run on a Ray worker: one cross-validation fold, returned as its run record (nothing is stored)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_fold(open_cv(recipe, CVConfig(cv_resume=folder)), fold)


def run_folds_on_ray(ctx: CVContext, folds: list[int], *, address: str) -> Iterator[RunRecord]:
    """Every fold of ``folds`` as a Ray task; yields each fold's run record as it finishes (the caller, the driver,
    is the only writer of the store)."""
    calls = {fold: {"recipe": ctx.recipe, "folder": str(ctx.folder.resolve()), "fold": fold} for fold in folds}
    for fold, record in ray_map(fold_task, calls, address=None if address == "local" else address,
                                cpus_per_task=max(1, ctx.recipe.threads)):
        log.info("ray: fold %d finished", fold)
        yield record
