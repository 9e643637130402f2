"""Latency measurement on CPU: warm-up, fixed thread count, ``inference_mode``, median and IQR.

PyTorch eager and ONNX Runtime are timed with the same protocol in the same process, so their ratio is
meaningful; absolute figures depend on the machine and are only compared within one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from core.artifacts.onnx_runtime import ort_logits, ort_session

if TYPE_CHECKING:
    from core.serve.predict import Predictor


@dataclass(frozen=True)
class Latency:
    """Per-call latency in milliseconds: the median and the interquartile range."""

    median_ms: float
    iqr_ms: float
    runs: int
    batch: int
    threads: int


def time_calls(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_seconds: float = 0.0) -> list[float]:
    """Wall time of ``fn()`` in ms, ``runs`` times (more until ``min_seconds`` elapsed), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def summarize(times: list[float], *, batch: int, threads: int) -> Latency:
    q1, q3 = np.percentile(times, [25, 75])
    return Latency(statistics.median(times), float(q3 - q1), len(times), batch, threads)


def torch_latency(model: nn.Module, *, input_size: int, batch: int = 1, threads: int = 2, warmup: int = 5,
                  runs: int = 30) -> Latency:
    """Eager PyTorch latency at a fixed thread count under ``inference_mode``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, input_size, input_size)
    model = model.eval()
    try:
        with torch.inference_mode():
            times = time_calls(lambda: model(x), warmup=warmup, runs=runs)
    finally:
        torch.set_num_threads(previous)
    return summarize(times, batch=batch, threads=threads)


def onnx_latency(path: str, *, input_size: int, batch: int = 1, threads: int = 2, warmup: int = 5,
                 runs: int = 30) -> Latency:
    """ONNX Runtime CPU latency with ``threads`` intra-op threads."""
    session = ort_session(path, threads=threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, input_size, input_size), dtype=np.float32)
    times = time_calls(lambda: ort_logits(session, x), warmup=warmup, runs=runs)
    return summarize(times, batch=batch, threads=threads)


def predictor_latency(predictor: Predictor, *, input_size: int, batch: int = 1, threads: int = 2, warmup: int = 5,
                      runs: int = 30) -> Latency:
    """Latency of a deployable model through the same :class:`Predictor` that measures its accuracy.

    ONNX predictors carry their own intra-op thread count (set when their session was made); PyTorch ones run
    with ``threads`` torch threads under ``inference_mode``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, input_size, input_size), dtype=np.float32)
    try:
        times = time_calls(lambda: predictor.logits(x), warmup=warmup, runs=runs)
    finally:
        torch.set_num_threads(previous)
    return summarize(times, batch=batch, threads=threads)
