"""Plain-text summaries of stored runs, read back from the results store."""

from __future__ import annotations

from core.metrics import METRIC_NAMES
from core.store.results import ResultsStore


def run_summary(store: ResultsStore, run_id: str) -> str:
    """One row per split of ``run_id`` with every scalar metric, plus the run's provenance."""
    run = store.query("SELECT model, variant, git_sha, seed, split_hash, dataset_fingerprint, device "
                      "FROM runs WHERE run_id = ?", [run_id])
    if run.empty:
        raise KeyError(f"run {run_id} is not in {store.path}")
    table = store.metrics(run_id).pivot(index="split", columns="name", values="value")
    table = table[[m for m in METRIC_NAMES if m in table.columns]]
    epochs = store.query("SELECT count(DISTINCT epoch) AS n FROM history WHERE run_id = ?", [run_id])["n"][0]
    r = run.iloc[0]
    header = (f"run {run_id}: {r.model} ({r.variant}), {epochs} epochs, seed {r.seed}, split {r.split_hash}, "
              f"data {r.dataset_fingerprint}, git {r.git_sha[:12]}, {r.device}")
    return header + "\n" + table.to_string(float_format=lambda x: f"{x:.4f}")
