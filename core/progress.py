"""Progress for long work: a tqdm bar on a terminal, periodic log lines otherwise (CI, nohup, log files)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("lesionlite.progress")


class _LogProgress:
    """The part of tqdm's interface we use, reporting through ``logging`` every ``interval`` seconds."""

    def __init__(self, iterable: Iterable[T], *, total: int | None, desc: str, unit: str, interval: float,
                 initial: int = 0):
        self.iterable, self.total, self.desc, self.unit, self.interval = iterable, total, desc, unit, interval
        self.postfix: dict[str, Any] = {}
        self.n = self.initial = initial
        self.start = self.last = time.perf_counter()

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = (self.n - self.initial) / (now - self.start)
        eta = f", ETA {(self.total - self.n) / rate:.0f}s" if self.total and rate else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        log.info("%s: %d/%s %s (%.1f %s/s%s%s)", self.desc, self.n, self.total or "?", self.unit, rate, self.unit,
                 eta, extra)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = kw

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             interval: float = 30.0, **tqdm_kw: Any) -> Any:
    """A tqdm bar (rate and ETA) on a terminal; otherwise a log line every ``interval`` seconds."""
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_kw)
    return _LogProgress(iterable if iterable is not None else [], total=total, desc=desc, unit=unit, interval=interval,
                        initial=int(tqdm_kw.get("initial", 0)))
