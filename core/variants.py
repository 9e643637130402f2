"""Deployable variants: a folder with ``model.onnx`` (or ``model.pt``) and ``model_card.json``.

The card records what a deployment needs and what a reader must know: architecture, classes in order,
preprocessing, pruning ratio, quantization mode, metrics, size, latency, split hash, git SHA and the data
licence. The web app and the dashboard load models only through :func:`load_predictor`, which also
accepts a trained-model folder (``model.json``) or a run id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from core.classes import CLASSES
from core.data.transforms import Preprocessing
from core.errors import ModelError
from core.export import artifact_bytes, ort_logits, ort_session
from core.model_io import DEFAULT_MODELS_DIR, load_trained_model, resolve_model_dir

log = logging.getLogger(__name__)

CARD_NAME = "model_card.json"
VARIANT_FORMAT = "lesionlite-variant/1"


class Predictor(Protocol):
    """Anything that turns preprocessed images into logits; carries its card."""

    card: dict[str, Any]
    preprocessing: Preprocessing

    def logits(self, images: np.ndarray) -> np.ndarray: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxPredictor:
    def __init__(self, path: Path, card: dict[str, Any], *, threads: int = 0):
        self.path, self.card = path, card
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])
        self.session = ort_session(path, threads=threads)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return ort_logits(self.session, images)


class TorchPredictor:
    def __init__(self, model: torch.nn.Module, card: dict[str, Any]):
        self.model, self.card = model.eval(), card
        self.preprocessing = Preprocessing.from_dict(card["preprocessing"])

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).float().numpy()


def write_variant(folder: str | Path, *, model_file: str, card: dict[str, Any]) -> Path:
    """Write ``model_card.json`` beside ``model_file`` in ``folder``; size is measured from the file."""
    folder = Path(folder)
    path = folder / model_file
    if not path.is_file():
        raise ModelError(f"variant file missing: {path}")
    full = {"format": VARIANT_FORMAT, "file": model_file, "classes": list(CLASSES), **card,
            "size_bytes": artifact_bytes(path)}
    (folder / CARD_NAME).write_text(json.dumps(full, indent=2, default=str))
    return folder / CARD_NAME


def read_card(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"not a variant folder: {path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if tuple(card.get("classes", ())) != CLASSES:
        raise ModelError(f"{path}: class order {card.get('classes')} differs from this code's {CLASSES}")
    return card


def load_predictor(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR, threads: int = 0) -> Predictor:
    """A predictor for a variant folder, a trained-model folder, or a trained run id."""
    folder = Path(ref)
    if (folder / CARD_NAME).is_file():
        card = read_card(folder)
        path = folder / card["file"]
        if path.suffix == ".onnx":
            return OnnxPredictor(path, card, threads=threads)
        model = torch.load(path, map_location="cpu", weights_only=False)  # whole pruned module, written by us
        return TorchPredictor(model, card)
    model_dir = resolve_model_dir(ref, models_dir=models_dir)
    model, mcard, _ = load_trained_model(model_dir)
    card = {**mcard.to_dict(), "variant": "dense-fp32", "parent_run_id": mcard.run_id}
    return TorchPredictor(model, card)
