"""The compression sweep: models x pruning ratios x quantization modes, every cell measured and stored.

Each cell is a deployable variant folder (``<variants_dir>/<parent_run_id>/<variant>/``) and a run in the
results store whose parent is the dense training run. Cells are evaluated on the parent's validation split
(which chooses what to deploy) and test split (which reports it) with the full metric set, sized (bytes of
the artifact) and timed (batch 1, fixed threads, median and IQR).

Work is grouped by (model, pruning): one prune + fine-tune serves all quantization modes of that ratio.
Completed cells are skipped on a rerun (resumable); a cell is stored only once all of it exists.
``shard="i/n"`` runs the groups whose index is i modulo n, so a grid can be spread over machines.

Modules: config (SweepConfig, Group, the plan) <- build (a group's model) <- cells (make, measure, record a cell)
<- ledger (the runner's store: cells to do, cells stored) <- ray_runner (groups as Ray tasks) <- run (run_sweep,
the summary).
"""

from core.jobs.sweep.config import Group, SweepConfig, parse_shard, plan_groups, shard_groups, sweep_id
from core.jobs.sweep.run import run_sweep, sweep_summary

__all__ = ["Group", "SweepConfig", "parse_shard", "plan_groups", "run_sweep", "shard_groups", "sweep_id",
           "sweep_summary"]
