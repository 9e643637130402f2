"""ONNX Runtime sessions for deployable files: one CPU session per file with fixed threads, and its logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def ort_session(path: str | Path, *, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; ``threads`` > 0 fixes the intra-op thread count."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_logits(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: images.astype(np.float32, copy=False)})[0]
