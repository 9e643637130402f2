"""The sweep's one writer of the results store: which cells are still to do, and each finished cell stored."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.jobs.sweep.cells import retime
from core.jobs.sweep.config import Group, SweepConfig
from core.store.results import ResultsStore, RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ledger:
    """The runner's access to the store. The store is open only while it is read or written: DuckDB admits no
    reader beside a writer process, and the dashboard must keep showing the store while a sweep runs for hours.
    ``time_on_driver``: every cell is re-timed here before it is stored, so latency columns are comparable."""

    cfg: SweepConfig
    time_on_driver: bool = False

    def create(self) -> None:
        """Create (or migrate) the store now: a store that cannot be written fails before any work."""
        ResultsStore(self.cfg.db).close()

    def pending(self, parent_run_id: str, group: Group) -> list[str]:
        """The modes of ``group`` whose cells are not stored yet (what a resumed sweep still has to do)."""
        with ResultsStore(self.cfg.db, read_only=True) as store:
            todo = [m for m in group.modes if not store.has_run(group.cell_id(parent_run_id, m))]
        if not todo:
            log.info("%s %s: all cells already stored, skipping", group.model, group.variant("*"))
        return todo

    def store(self, record: RunRecord) -> str:
        """Store one finished cell (one transaction: all of it or nothing)."""
        if self.time_on_driver:
            record = retime(record, self.cfg)
        with ResultsStore(self.cfg.db) as store:
            store.record_run(record)
        deploy = record.scalars["deploy"]
        log.info("%s %s: test bal-acc %.3f, %.2f MB, %.2f ms (timed on %s)", record.model, record.variant,
                 record.evaluations["test"].metrics["balanced_accuracy"], deploy["size_mb"], deploy["latency_b1_ms"],
                 record.config["timed_on"]["host"])
        return record.run_id
