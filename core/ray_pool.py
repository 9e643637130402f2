"""Independent pieces of work as Ray tasks, their results handed back as each finishes; the caller (the driver)
stays the only writer of the results store. Ray is imported only when this is used."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


def ray_map(fn: Callable[..., Any], calls: dict[Any, dict[str, Any]], *, address: str | None,
            cpus: int | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(**kwargs)`` for every ``key: kwargs`` of ``calls`` as a Ray task; yield ``(key, result)`` in the order
    the tasks finish. ``address``: an existing cluster or ``"auto"``; None starts a private local instance with
    ``cpus`` CPUs for this call and shuts it down afterwards."""
    import ray

    started_here = _start_ray(address, cpus)
    try:
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(fn)
        pending = {task.remote(**kwargs): key for key, kwargs in calls.items()}
        log.info("ray: %d task(s) submitted to %s", len(pending), ray.get_runtime_context().gcs_address)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            yield key, ray.get(done[0])
            log.info("ray: %d task(s) left", len(pending))
    finally:
        if started_here:
            ray.shutdown()


def _start_ray(address: str | None, cpus: int | None) -> bool:
    """Join ``address``, or start a private local instance for this command (no dashboard, small object store).
    Returns whether this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False, log_to_driver=True,
             object_store_memory=None if address else 256 * 1024**2)
    return True
