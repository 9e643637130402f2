"""The DuckDB results store: schema, atomic append-only writes, read-only readers, one writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from core.metrics import evaluate_predictions
from core.provenance import Provenance
from core.store.results import ResultsStore, RunRecord, StoreError


def _record(run_id: str, tmp_path: Path, **kw: object) -> RunRecord:
    y = np.array([0, 1, 1, 2, 3, 4, 5, 6])
    probs = np.eye(7)[y] * 0.8 + 0.2 / 7
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    base = dict(run_id=run_id, kind="train", model="test_resnet", variant="dense-fp32", config={"lr": 0.1},
                provenance=Provenance("synthetic", "abc", "def", 0, "cpu", "123"),
                evaluations={"test": evaluate_predictions(y, probs)},
                history=[{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5}],
                artifacts={"weights": weights})
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_record_and_read_back(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with ResultsStore(db) as store:
        store.record_run(_record("r1", tmp_path))
    with ResultsStore(db, read_only=True) as store:
        runs = store.runs()
        assert runs["run_id"].tolist() == ["r1"] and runs["split_hash"][0] == "def"
        m = store.metrics("r1").set_index("name")["value"]
        assert m["accuracy"] == 1.0 and "balanced_accuracy" in m
        assert store.query("SELECT count(*) n FROM history WHERE run_id='r1'")["n"][0] == 2
        assert store.query("SELECT count(*) n FROM confusion")["n"][0] == 49
        art = store.query("SELECT * FROM artifacts")
        assert art["bytes"][0] == 7 and len(art["sha256"][0]) == 64
        rows = store.query("SELECT * FROM metric_rows")
        assert {"run_id", "git_sha", "seed", "split_hash", "config"} <= set(rows.columns)


def test_failed_run_leaves_no_rows(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    bad = _record("r2", tmp_path, artifacts={"weights": tmp_path / "missing.pt"})
    with ResultsStore(db) as store, pytest.raises(FileNotFoundError):
        store.record_run(bad)
    with ResultsStore(db, read_only=True) as store:
        for table in ("runs", "metrics", "per_class", "confusion", "history", "artifacts"):
            assert store.query(f"SELECT count(*) n FROM {table}")["n"][0] == 0, table


def test_append_only_rejects_duplicate_run(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.duckdb") as store:
        store.record_run(_record("r1", tmp_path))
        with pytest.raises(duckdb.ConstraintException):
            store.record_run(_record("r1", tmp_path))
        assert len(store.runs()) == 1


def test_read_only_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="make demo"):
        ResultsStore(tmp_path / "none.duckdb", read_only=True)


def test_newer_schema_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with ResultsStore(db) as store:
        store.con.execute("INSERT INTO schema_version VALUES (99, now())")
    with pytest.raises(StoreError, match="schema version 99"):
        ResultsStore(db)


def test_second_writer_process_gets_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with ResultsStore(db):
        code = ("from core.store.results import ResultsStore, StoreError\n"
                f"try:\n    ResultsStore({str(db)!r})\nexcept StoreError as e:\n    print('STORE', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=Path(__file__).parent.parent, timeout=60)
    assert "STORE" in out.stdout and "one writer" in out.stdout, out.stdout + out.stderr


def test_predictions_stored_and_v1_store_migrated(tmp_path: Path) -> None:
    from core.store.results import Predictions

    db = tmp_path / "r.duckdb"
    with ResultsStore(db) as store:  # make it look like a schema-1 store written by an older version
        store.con.execute("DROP TABLE predictions")
        store.con.execute("DELETE FROM schema_version WHERE version = 2")
        store.con.execute("INSERT INTO schema_version VALUES (1, now())")
    probs = np.full((3, 7), 1 / 7, dtype=np.float32)
    rec = _record("r1", tmp_path, predictions={"test": Predictions(["a", "b", "c"], np.array([0, 1, 2]), probs)})
    with ResultsStore(db) as store:
        store.record_run(rec)
        assert store.query("SELECT max(version) v FROM schema_version")["v"][0] == 2
        got = store.query("SELECT image_id, label, probs FROM predictions ORDER BY image_id")
    assert got["image_id"].tolist() == ["a", "b", "c"] and got["label"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(np.stack(got["probs"].to_numpy()), probs)


def test_artifact_paths_are_absolute_and_the_upgrade_converts_earlier_relative_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.jobs.upgrade import upgrade_store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "variants").mkdir(parents=True)
    card = tmp_path / "results" / "variants" / "card.json"
    card.write_text("{}")
    db = tmp_path / "results" / "results.duckdb"
    with ResultsStore(db) as store:
        store.record_run(_record("r1", tmp_path, artifacts={"card": Path("results/variants/card.json")}))
        stored = store.query("SELECT path FROM artifacts")["path"].iloc[0]
        assert Path(stored).is_absolute() and Path(stored) == card  # new rows: absolute
        store.con.execute("UPDATE artifacts SET path = 'results/variants/card.json'")  # as an earlier version wrote
    monkeypatch.chdir(tmp_path / "results")  # run from elsewhere: the repository root is found above the store
    assert upgrade_store(db)["absolute_paths"] == 1
    with ResultsStore(db, read_only=True) as store:
        assert store.query("SELECT path FROM artifacts")["path"].tolist() == [str(card)]
    assert upgrade_store(db)["absolute_paths"] == 0  # once
