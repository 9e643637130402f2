"""The sweep on Ray: every group with cells left to do as a task; this process stays the only writer of the store."""

from __future__ import annotations

import logging

import torch

from core.artifacts.card import (
    read_trained_card,
)
from core.jobs.sweep.cells import iter_cells
from core.jobs.sweep.config import Group, SweepConfig
from core.jobs.sweep.ledger import Ledger
from core.ray_pool import ray_map
from core.store.results import RunRecord
from core.train.parent import load_parent

log = logging.getLogger(__name__)


def group_task(*, parent_dir: str, group: Group, todo: list[str], cfg: SweepConfig, threads: int) -> list[RunRecord]:
    """Run on a Ray worker: every cell of ``todo`` for ``group``, returned as run records (nothing is stored).

    A task is one group (one prune + fine-tune serving every quantization mode): a task per cell would repeat the
    fine-tuning for every mode. It writes its variant folders under ``variants_dir`` (on a cluster: a path every
    worker can reach).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # the CPUs Ray reserved for this task, not every core of the node
    return list(iter_cells(load_parent(parent_dir), group=group, todo=todo, cfg=cfg))


def run_groups_on_ray(parents: dict[str, str], groups: list[Group], ledger: Ledger, *, address: str | None
                      ) -> list[str]:
    """Every group with cells left to do as a Ray task; each cell stored as its group finishes, one transaction per
    cell, so an interrupted sweep resumes like a sequential one. Returns the parent run ids."""
    cfg = ledger.cfg
    parent_ids = {model: read_trained_card(folder).run_id for model, folder in parents.items()}
    calls = {}
    for i, group in enumerate(groups):
        todo = ledger.pending(parent_ids[group.model], group)
        if todo:
            calls[i] = {"parent_dir": parents[group.model], "group": group, "todo": todo, "cfg": cfg,
                        "threads": cfg.ray_cpus_per_task}
    for i, records in ray_map(group_task, calls, address=address, cpus=cfg.ray_cpus or None,
                              cpus_per_task=cfg.ray_cpus_per_task, gpus_per_task=cfg.ray_gpus_per_task):
        for record in records:
            ledger.store(record)
        log.info("ray: %s %s stored", groups[i].model, groups[i].variant("*"))
    return list(parent_ids.values())
