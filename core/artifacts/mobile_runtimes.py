"""The phone runtimes, run here on x86: ONNX Runtime Mobile (``.ort``), ExecuTorch with XNNPACK (``.pte``) and LiteRT
(``.tflite``). Each file is loaded by its own runtime and turned into logits one image at a time (the mobile files
have a fixed batch of 1, as an app calls them).

Figures measured through these runners are an x86 proxy: phones have other cores, and XNNPACK picks other kernels.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.errors import ModelError

# file suffix -> (runtime, its Python distribution): the card names both, with the version that ran the file
RUNTIMES: dict[str, tuple[str, str]] = {
    ".ort": ("onnxruntime-mobile", "onnxruntime"),
    ".pte": ("executorch-xnnpack", "executorch"),
    ".tflite": ("litert", "ai-edge-litert"),
}

OPERATORS_FILE = "required_operators.config"  # ONNX Runtime's operator list for a reduced (smaller) build


def runtime_of(path: str | Path) -> str:
    """The runtime that runs ``path``, from its suffix; a :class:`ModelError` listing the known ones otherwise."""
    suffix = Path(path).suffix
    if suffix not in RUNTIMES:
        raise ModelError(f"{path}: not a mobile model file (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[suffix][0]


def runtime_version(path: str | Path) -> str:
    """The installed version of the package that runs ``path``."""
    return importlib.metadata.version(RUNTIMES[Path(path).suffix][1])


class MobileRunner:
    """One mobile file in its runtime; :meth:`logits` takes a (N, 3, H, W) float32 batch and calls the model on each
    image. A file its runtime cannot load is a :class:`ModelError` naming the file and the runtime's message."""

    def __init__(self, path: str | Path, *, threads: int = 0):
        self.path = Path(path)
        self.runtime = runtime_of(self.path)
        if not self.path.is_file():
            raise ModelError(f"mobile model file missing: {self.path}")
        try:
            self._call = {".ort": self._ort, ".pte": self._pte, ".tflite": self._tflite}[self.path.suffix](threads)
        except ModelError:
            raise
        except Exception as exc:  # each runtime raises its own types (RuntimeError, ValueError, ...)
            raise ModelError(f"{self.path}: {self.runtime} cannot load it ({type(exc).__name__}: {exc})") from exc

    def logits(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        return np.concatenate([self._call(images[i:i + 1]) for i in range(len(images))])

    def _ort(self, threads: int):
        session = ort_session(self.path, threads=threads)
        return lambda x: ort_logits(session, x)

    def _pte(self, threads: int):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads:
            portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's one process-wide pool
        method = Runtime.get().load_program(self.path).load_method("forward")
        return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()

    def _tflite(self, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=threads or None)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def call(x: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(inp["index"], _to_tensor(x, inp))
            interpreter.invoke()
            return _from_tensor(interpreter.get_tensor(out["index"]), out)

        return call


def _to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """A LiteRT input: float as is, or quantized with the tensor's own scale and zero point (int8 input)."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _from_tensor(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
