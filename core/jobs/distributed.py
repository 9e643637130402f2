"""The sweep's groups of cells, and cross-validation's folds, as Ray tasks; the driver (this process) is the only
writer of the results store.

A task is one group (one prune + fine-tune serving every quantization mode of a pruning ratio): splitting a group
into one task per cell would repeat its fine-tuning for every mode. Each task loads the parent's data itself, writes
its variant folders under ``variants_dir`` (on a cluster: a path every worker can reach) and returns the cells'
run records; the driver stores each group's cells as the task finishes, one transaction per cell, so an
interrupted sweep resumes like a sequential one (cells already stored are skipped; a cell's folder left without
its row is rebuilt).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Iterator

    from core.jobs.cv import _Context
    from core.jobs.sweep import Group, SweepConfig
    from core.jobs.train import TrainConfig
    from core.store.results import RunRecord

log = logging.getLogger(__name__)


def group_task(parent_dir: str, group: Group, todo: list[str], cfg: SweepConfig, threads: int) -> list[RunRecord]:
    """Run on a Ray worker: every cell of ``todo`` for ``group``, returned as run records (nothing is stored)."""
    from core.jobs.sweep import iter_cells, load_parent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not every core of the node
    return list(iter_cells(load_parent(parent_dir), group, todo, cfg))


def run_groups_on_ray(parents: dict[str, str], groups: list[Group], cfg: SweepConfig, *, address: str | None,
                      time_on_driver: bool) -> list[str]:
    """Submit every group with cells left to do; store each result as it arrives. Returns the parent run ids."""
    import ray

    from core.jobs.sweep import pending_modes, retime, store_cell
    from core.serve.artifacts import read_trained_card

    parent_ids = {model: read_trained_card(folder).run_id for model, folder in parents.items()}
    started_here = _start_ray(address, cfg.ray_cpus or None)
    try:
        task = ray.remote(num_cpus=cfg.ray_cpus_per_task, num_gpus=cfg.ray_gpus_per_task)(group_task)
        pending = {}
        for group in groups:
            todo = pending_modes(cfg.db, parent_ids[group.model], group)
            if not todo:
                log.info("%s %s: all cells already stored, skipping", group.model, group.variant("*"))
                continue
            ref = task.remote(parents[group.model], group, todo, cfg, cfg.ray_cpus_per_task)
            pending[ref] = group
        log.info("ray: %d task(s) submitted to %s", len(pending), ray.get_runtime_context().gcs_address)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(done[0])
            for record in ray.get(done[0]):
                store_cell(cfg.db, retime(record, cfg) if time_on_driver else record)
            log.info("ray: %s %s stored; %d task(s) left", group.model, group.variant("*"), len(pending))
    finally:
        if started_here:
            ray.shutdown()
    return list(parent_ids.values())


def _start_ray(address: str | None, cpus: int | None) -> bool:
    """Join ``address`` (an existing cluster, or ``"auto"``), or start a private local instance for this command
    (no dashboard, small object store). Returns whether this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False, log_to_driver=True,
             object_store_memory=None if address else 256 * 1024**2)
    return True


def fold_task(recipe: TrainConfig, folder: str, fold: int) -> RunRecord:
    """Run on a Ray worker: one cross-validation fold, returned as its run record (nothing is stored)."""
    from core.jobs.cv import CVConfig, open_cv, run_fold

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_fold(open_cv(recipe, CVConfig(cv_resume=folder)), fold)


def run_folds_on_ray(ctx: _Context, folds: list[int], *, address: str) -> Iterator[RunRecord]:
    """Submit every fold of ``folds`` as a Ray task; yield each fold's run record as it finishes (the caller, the
    driver, is the only writer of the store)."""
    import ray

    started_here = _start_ray(None if address == "local" else address, None)
    try:
        task = ray.remote(num_cpus=max(1, ctx.recipe.threads))(fold_task)
        pending = {task.remote(ctx.recipe, str(ctx.folder.resolve()), fold): fold for fold in folds}
        log.info("ray: %d fold task(s) submitted to %s", len(pending), ray.get_runtime_context().gcs_address)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            fold = pending.pop(done[0])
            log.info("ray: fold %d finished; %d task(s) left", fold, len(pending))
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
