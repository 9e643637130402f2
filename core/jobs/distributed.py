"""The sweep's groups of cells as Ray tasks; the driver (this process) is the only writer of the results store.

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
    from core.jobs.sweep import Group, SweepConfig
    from core.store.results import ResultsStore, RunRecord

log = logging.getLogger(__name__)


def group_task(parent_dir: str, group: Group, todo: list[str], cfg: SweepConfig, threads: int) -> list[RunRecord]:
    """Run on a Ray worker: every cell of ``todo`` for ``group``, returned as run records (nothing is stored)."""
    from core.jobs.sweep import iter_cells, load_parent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not every core of the node
    return list(iter_cells(load_parent(parent_dir), group, todo, cfg))


def run_groups_on_ray(store: ResultsStore, parents: dict[str, str], groups: list[Group], cfg: SweepConfig, *,
                      address: str | None, time_on_driver: bool) -> list[str]:
    """Submit every group with cells left to do; store each result as it arrives. Returns the parent run ids."""
    import ray

    from core.jobs.sweep import pending_modes, retime, store_cell
    from core.serve.artifacts import read_trained_card

    parent_ids = {model: read_trained_card(folder).run_id for model, folder in parents.items()}
    started_here = not ray.is_initialized()
    if started_here:
        # No address: a private local instance that lives as long as this command (no dashboard, small store).
        ray.init(address=address, num_cpus=None if address else (cfg.ray_cpus or None), include_dashboard=False,
                 log_to_driver=True, object_store_memory=None if address else 256 * 1024**2)
    try:
        task = ray.remote(num_cpus=cfg.ray_cpus_per_task, num_gpus=cfg.ray_gpus_per_task)(group_task)
        pending = {}
        for group in groups:
            todo = pending_modes(store, parent_ids[group.model], group)
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
                store_cell(store, retime(record, cfg) if time_on_driver else record)
            log.info("ray: %s %s stored; %d task(s) left", group.model, group.variant("*"), len(pending))
    finally:
        if started_here:
            ray.shutdown()
    return list(parent_ids.values())
