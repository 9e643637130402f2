"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on GPU).

A plain ``python -m scripts.train`` is a world of one: every helper here is then a no-op, so the single-process
path is unchanged. Only rank 0 writes files and the results store; the others compute.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """The process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK), joined once."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend)
        log.info("data-parallel: rank %d of %d (%s)", world.rank, world.size, backend)
    return world


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_arrays(world: World, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every rank's arrays concatenated in rank order, on every rank (metrics then agree across ranks)."""
    if not world.distributed:
        return arrays
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))


def sum_across(world: World, *values: float) -> tuple[float, ...]:
    """The sums over ranks of each value (for epoch loss and accuracy counts)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return tuple(t.tolist())


def finish(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
