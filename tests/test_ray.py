"""The sweep on Ray: a local 2-CPU instance gives the sequential sweep's cells and figures; an interrupted driver
resumes without duplicates; the driver re-times cells on request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core.jobs.sweep import plan_groups, run_sweep
from core.jobs.train import TrainResult
from core.store.results import ResultsStore
from tests.configs import sweep_config

pytest.importorskip("ray", reason="ray is not installed")

ACCURACY = ("accuracy", "balanced_accuracy", "auc_macro_ovr", "kappa", "mcc", "ece", "nll", "brier")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Ray tasks run with the threads they reserve (1 here); the sequential reference does the same, because
    float sums of different thread counts may differ in the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _figures(db: Path) -> dict[tuple[str, str, str], float]:
    with ResultsStore(db, read_only=True) as store:
        rows = store.query("SELECT m.run_id, m.split, m.name, m.value FROM metrics m JOIN runs r USING (run_id) "
                           "WHERE r.kind = 'variant' AND m.split IN ('val', 'test')")
    return {(r.run_id, r.split, r.name): r.value for r in rows.itertuples() if r.name in ACCURACY}


def test_ray_sweep_gives_the_sequential_cells_and_figures(trained_tiny: TrainResult, tmp_path: Path,
                                                          one_thread: None) -> None:
    kw = dict(modes=["torch_fp32", "fp32", "static"], ray_cpus=2)
    seq = sweep_config(trained_tiny, tmp_path, db=str(tmp_path / "seq.duckdb"), variants_dir=str(tmp_path / "v-seq"),
                       **kw)
    par = sweep_config(trained_tiny, tmp_path, db=str(tmp_path / "ray.duckdb"), variants_dir=str(tmp_path / "v-ray"),
                       **kw)
    run_sweep(seq)
    summary = run_sweep(par, use_ray=True)
    assert len(summary) == sum(len(g.modes) for g in plan_groups(par))
    sequential, distributed = _figures(tmp_path / "seq.duckdb"), _figures(tmp_path / "ray.duckdb")
    assert sequential.keys() == distributed.keys() and len(sequential) > 0
    assert sequential == pytest.approx(distributed, abs=1e-9)
    with ResultsStore(tmp_path / "ray.duckdb", read_only=True) as store:
        timed = store.query("SELECT json_extract_string(config, '$.timed_on.host') AS host, "
                            "json_extract_string(config, '$.timed_on.cpu') AS cpu FROM runs WHERE kind = 'variant'")
    assert timed["host"].notna().all() and timed["cpu"].notna().all()  # latency says which machine measured it


def test_interrupted_ray_driver_resumes_without_duplicates(trained_tiny: TrainResult, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from core.jobs.sweep.ledger import Ledger

    cfg = sweep_config(trained_tiny, tmp_path, ray_cpus=2, modes=["fp32", "static"])
    real_store = Ledger.store
    calls = []

    def killed_after_one(ledger, record):
        if calls:
            raise KeyboardInterrupt  # the driver dies with results still arriving
        calls.append(record.run_id)
        return real_store(ledger, record)

    monkeypatch.setattr(Ledger, "store", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, use_ray=True)
    monkeypatch.setattr(Ledger, "store", real_store)
    with ResultsStore(cfg.db, read_only=True) as store:
        assert list(store.runs()["run_id"]) == calls  # only whole cells were written
    run_sweep(cfg, use_ray=True, time_on_driver=True)
    with ResultsStore(cfg.db, read_only=True) as store:
        runs = store.runs()
        retimed = store.query("SELECT run_id FROM runs WHERE "
                              "json_extract_string(config, '$.timed_on.retimed_on_driver') = 'true'")
    expected = {g.cell_id(trained_tiny.run_id, m) for g in plan_groups(cfg) for m in g.modes}
    assert set(runs["run_id"]) == expected and runs["run_id"].is_unique
    assert set(retimed["run_id"]) == expected - set(calls)  # the resumed cells were re-timed here
