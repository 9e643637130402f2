"""The DuckDB results store: every run, its metrics, per-class figures, confusion, history and artifacts.

Append-only: runs are inserted once, in one transaction with all their rows, so a failed run leaves
nothing behind; there is no update or delete. One writer process at a time (DuckDB's file lock); readers
open the file read-only. Every metric row joins to its run's provenance (git SHA, seed, split hash, config)
through ``run_id``; the ``metric_rows`` view does that join.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from core.classes import CLASSES
from core.errors import LesionLiteError
from core.metrics import Evaluation
from core.provenance import Provenance, sha256_file, utc_now

log = logging.getLogger(__name__)

DEFAULT_DB = Path("results/results.duckdb")
SCHEMA_VERSION = 2  # 2: predictions table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    parent_run_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    git_sha VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    variant VARCHAR NOT NULL,
    config JSON NOT NULL,
    dataset VARCHAR NOT NULL,
    dataset_fingerprint VARCHAR NOT NULL,
    split_hash VARCHAR NOT NULL,
    seed INTEGER NOT NULL,
    device VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), split VARCHAR NOT NULL, name VARCHAR NOT NULL,
    value DOUBLE, PRIMARY KEY (run_id, split, name)
);
CREATE TABLE IF NOT EXISTS per_class (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), split VARCHAR NOT NULL, class VARCHAR NOT NULL,
    precision DOUBLE, recall DOUBLE, f1 DOUBLE, support INTEGER, PRIMARY KEY (run_id, split, class)
);
CREATE TABLE IF NOT EXISTS confusion (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), split VARCHAR NOT NULL, true_class VARCHAR NOT NULL,
    pred_class VARCHAR NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (run_id, split, true_class, pred_class)
);
CREATE TABLE IF NOT EXISTS history (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL, name VARCHAR NOT NULL,
    value DOUBLE, PRIMARY KEY (run_id, epoch, name)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), kind VARCHAR NOT NULL, path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL, bytes BIGINT NOT NULL, PRIMARY KEY (run_id, path)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR NOT NULL REFERENCES runs(run_id), split VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
    label INTEGER NOT NULL, probs FLOAT[] NOT NULL, PRIMARY KEY (run_id, split, image_id)
);
CREATE OR REPLACE VIEW metric_rows AS
    SELECT m.run_id, r.parent_run_id, r.created_at, r.git_sha, r.seed, r.split_hash, r.dataset_fingerprint,
           r.model, r.variant, r.kind, r.config, m.split, m.name, m.value
    FROM metrics m JOIN runs r USING (run_id);
"""


class StoreError(LesionLiteError):
    """The results store cannot be opened or written."""


@dataclass
class Predictions:
    """Per-image class probabilities of one split (for ROC curves and reliability diagrams)."""

    image_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray


@dataclass
class RunRecord:
    """Everything stored for one run; written atomically by :meth:`ResultsStore.record_run`."""

    run_id: str
    kind: str  # "train", "variant", "eval" or "ood_gate"
    model: str
    variant: str
    config: dict[str, Any]
    provenance: Provenance  # dataset, its fingerprint, split hash, seed, device, git SHA
    parent_run_id: str | None = None
    created_at: dt.datetime = field(default_factory=utc_now)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)  # split -> figures
    scalars: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> name -> value (e.g. "deploy")
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch, with key "epoch"
    artifacts: dict[str, Path] = field(default_factory=dict)  # kind -> file
    predictions: dict[str, Predictions] = field(default_factory=dict)  # split -> per-image probabilities


class ResultsStore:
    """A connection to the results store; use as a context manager.

    Args:
        path: the DuckDB file.
        read_only: open for reading only (any number of readers; the file must exist).
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False):
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise StoreError(f"results store not found: {self.path} (run `make demo` to create one)")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open results store {self.path}: {str(exc).splitlines()[0]} "
                             "(only one writer process at a time)") from None
        if not read_only:
            self._migrate()
        self._check_version()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def _migrate(self) -> None:
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute(_SCHEMA)
        current = self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if current is None or current < SCHEMA_VERSION:  # tables were created above with IF NOT EXISTS
            self.con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, utc_now()])
        self.con.execute("COMMIT")

    def _check_version(self) -> None:
        try:
            version = self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        except duckdb.CatalogException:
            raise StoreError(f"{self.path} is not a LesionLite results store (no schema_version table)") from None
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this code reads up to {SCHEMA_VERSION}")

    def record_run(self, rec: RunRecord) -> None:
        """Insert a run and all its rows in one transaction; on any error nothing is written."""
        con, p = self.con, rec.provenance
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [rec.run_id, rec.parent_run_id, rec.created_at, p.git_sha, rec.kind, rec.model, rec.variant,
                 json.dumps(rec.config, sort_keys=True, default=str), p.dataset, p.dataset_fingerprint,
                 p.split_hash, p.seed, p.device],
            )
            for split, ev in rec.evaluations.items():
                con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                [[rec.run_id, split, k, v] for k, v in ev.metrics.items()])
                con.executemany("INSERT INTO per_class VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [[rec.run_id, split, c, float(r.precision), float(r.recall), float(r.f1),
                                  int(r.support)] for c, r in ev.per_class.iterrows()])
                con.executemany("INSERT INTO confusion VALUES (?, ?, ?, ?, ?)",
                                [[rec.run_id, split, CLASSES[i], CLASSES[j], int(ev.confusion[i, j])]
                                 for i in range(len(CLASSES)) for j in range(len(CLASSES))])
            for split, values in rec.scalars.items():
                con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                [[rec.run_id, split, k, float(v)] for k, v in values.items()])
            history_rows = [[rec.run_id, int(row["epoch"]), k, float(v)]
                            for row in rec.history for k, v in row.items() if k != "epoch"]
            if history_rows:
                con.executemany("INSERT INTO history VALUES (?, ?, ?, ?)", history_rows)
            for split, pred in rec.predictions.items():
                frame = pd.DataFrame({"run_id": rec.run_id, "split": split, "image_id": pred.image_ids,
                                      "label": np.asarray(pred.labels, dtype=np.int32),
                                      "probs": list(np.asarray(pred.probs, dtype=np.float32))})
                con.register("_new_predictions", frame)
                con.execute("INSERT INTO predictions SELECT * FROM _new_predictions")
                con.unregister("_new_predictions")
            for kind, path in rec.artifacts.items():
                con.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)",
                            [rec.run_id, kind, str(Path(path).resolve()), sha256_file(path), Path(path).stat().st_size])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("stored run %s in %s", rec.run_id, self.path)

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        # A cursor per query: one cached read-only store can then serve several threads (the dashboard's).
        return self.con.cursor().execute(sql, params or []).df()

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY created_at")

    def metrics(self, run_id: str) -> pd.DataFrame:
        return self.query("SELECT split, name, value FROM metrics WHERE run_id = ? ORDER BY split, name", [run_id])

    def has_run(self, run_id: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])


TABLES = ("runs", "metrics", "per_class", "confusion", "history", "artifacts", "predictions")


def ingest(target: ResultsStore, source: str | Path, *, run_ids: list[str] | None = None) -> int:
    """Copy the runs of another store (e.g. a sweep shard) that ``target`` lacks, all or nothing.

    ``run_ids`` limits the copy to those runs. Returns the number of runs added; runs already present are
    left as they are (append-only).
    """
    source = Path(source)
    if not source.is_file():
        raise StoreError(f"shard store not found: {source}")
    con = target.con
    con.execute(f"ATTACH '{source.as_posix()}' AS src (READ_ONLY)")
    try:
        version = con.execute("SELECT max(version) FROM src.schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(f"{source}: schema version {version}, expected {SCHEMA_VERSION}")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("CREATE TEMP TABLE new_runs AS SELECT run_id FROM src.runs "
                        "WHERE run_id NOT IN (SELECT run_id FROM main.runs)"
                        + (" AND list_contains(?, run_id)" if run_ids is not None else ""),
                        [list(run_ids)] if run_ids is not None else [])
            added = con.execute("SELECT count(*) FROM new_runs").fetchone()[0]
            for table in TABLES:
                con.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table} "
                            "WHERE run_id IN (SELECT run_id FROM new_runs)")
            con.execute("DROP TABLE new_runs")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DETACH src")
    log.info("ingested %d new run(s) from %s", added, source)
    return int(added)
