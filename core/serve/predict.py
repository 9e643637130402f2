"""Prediction: one :class:`Predictor` per deployable model (PyTorch, ONNX Runtime, or a phone runtime), for one
image or many.

The front ends and evaluation on a folder go through :func:`load_predictor` (the site and the live panel through
:class:`core.serve.deployed.DeployedModel`); the sweep wraps the file it has just written in the same predictor
classes (ONNX cells are read back from that file; PyTorch cells measure the module it saved) before its card
exists. Every path ends in a predictor's :meth:`~Predictor.logits`; single images are preprocessed by the one NumPy
implementation in :mod:`core.data.transforms` (the same crop and normalisation as evaluation, pinned by a test).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch.utils.data import DataLoader

from core.artifacts.card import (
    DEFAULT_MODELS_DIR,
    Card,
    is_variant_folder,
    load_trained_model,
    read_variant_card,
    resolve_model_dir,
)
from core.artifacts.mobile_runtimes import RUNTIMES, MobileRunner
from core.artifacts.onnx_runtime import ort_logits, ort_session
from core.calibration import calibrated_softmax
from core.classes import CLASSES, clinical_name
from core.data.transforms import Preprocessing, image_array
from core.errors import ModelError


class Predictor(Protocol):
    """Anything that turns preprocessed images (N, 3, H, W float32) into logits; carries its card."""

    card: Card

    @property
    def preprocessing(self) -> Preprocessing: ...

    def logits(self, images: np.ndarray) -> np.ndarray: ...


def probabilities(predictor: Predictor, logits: np.ndarray) -> np.ndarray:
    """The model's calibrated probabilities: softmax of the logits divided by the card's temperature."""
    return calibrated_softmax(logits, predictor.card.temperature)


class OnnxPredictor:
    """An ONNX file in one ONNX Runtime session (accuracy and latency are measured through this same session)."""

    def __init__(self, path: Path, card: Card, *, threads: int = 0):
        self.path, self.card = path, card
        self.session: ort.InferenceSession = ort_session(path, threads=threads)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    def logits(self, images: np.ndarray) -> np.ndarray:
        return ort_logits(self.session, images)


class MobilePredictor:
    """A phone file (``.ort``, ``.pte``, ``.tflite``) run by its own runtime, one image at a time."""

    def __init__(self, path: Path, card: Card, *, threads: int = 0):
        self.path, self.card = path, card
        self.runner = MobileRunner(path, threads=threads)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.runner.logits(images)


class TorchPredictor:
    """A PyTorch module in eval mode, run under ``inference_mode``."""

    def __init__(self, model: torch.nn.Module, card: Card):
        self.model, self.card = model.eval(), card

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).float().numpy()


# Test-time augmentation: the image and its horizontal, vertical and double flips (axes of an N, C, H, W batch);
# cross-validation measured exactly this (core.train.evaluation.model_logits), and FlipTTAPredictor serves it.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


class FlipTTAPredictor:
    """Test-time augmentation: the log of the mean softmax over each image and its three flips (:data:`TTA_FLIPS`),
    in one batch four times the size.

    Costs 4x the model's compute per image (measure it: ``scripts.bench_variants --tta``); cross-validation
    measured its paired out-of-fold gain (results/README.md). The card's temperature is the model's own, fitted
    without it.
    """

    def __init__(self, inner: Predictor):
        self.inner = inner
        self.card = inner.card

    @property
    def preprocessing(self) -> Preprocessing:
        return self.inner.preprocessing

    def logits(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        views = [np.flip(images, axis=axes) if axes else images for axes in TTA_FLIPS]
        out = self.inner.logits(np.ascontiguousarray(np.concatenate(views), dtype=np.float32))
        probs = np.stack([calibrated_softmax(out[i * n:(i + 1) * n]) for i in range(len(TTA_FLIPS))])
        return np.log(probs.mean(axis=0))


def load_predictor(ref: str | Path, *, models_dir: str | Path = DEFAULT_MODELS_DIR, threads: int = 0,
                   tta: bool = False) -> Predictor:
    """A predictor for a variant folder, a trained-model folder, or a trained run id (``tta``: wrapped in
    :class:`FlipTTAPredictor`)."""
    predictor = _load_predictor(ref, models_dir=models_dir, threads=threads)
    return FlipTTAPredictor(predictor) if tta else predictor


def _load_predictor(ref: str | Path, *, models_dir: str | Path, threads: int) -> Predictor:
    if is_variant_folder(ref):
        card = read_variant_card(ref)
        path = Path(ref) / str(card.file)
        if path.suffix == ".onnx":
            return OnnxPredictor(path, card, threads=threads)
        if path.suffix in RUNTIMES:
            return MobilePredictor(path, card, threads=threads)
        if not path.is_file():
            raise ModelError(f"variant file missing: {path}")
        model = torch.load(path, map_location="cpu", weights_only=False)  # whole pruned module, written by us
        return TorchPredictor(model, card)
    model, card, _ = load_trained_model(resolve_model_dir(ref, models_dir=models_dir))
    return TorchPredictor(model, card)


# Many images ---------------------------------------------------------------------------------------------------

def predict_logits(predictor: Predictor, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and labels for every (images, labels) batch of ``loader``, in order."""
    logits, labels = [], []
    for images, targets in loader:
        logits.append(predictor.logits(np.asarray(images, dtype=np.float32)))
        labels.append(np.asarray(targets))
    return np.concatenate(logits), np.concatenate(labels)


def predict_batches(predictor: Predictor, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and labels for every (images, labels) batch of ``loader``, in order."""
    logits, labels = predict_logits(predictor, loader)
    return probabilities(predictor, logits), labels


# One image -----------------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """One image through one model: probabilities in class order and the time of the model call alone."""

    model: str
    probs: np.ndarray
    latency_ms: float

    @property
    def top(self) -> str:
        return CLASSES[int(self.probs.argmax())]

    @property
    def top_name(self) -> str:
        return clinical_name(self.top)

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


def predict_image(predictor: Predictor, image: Image.Image, *, name: str) -> Prediction:
    """Preprocess with the model's own preprocessing, run it, and time the model call alone."""
    return predict_array(predictor, image_array(image, predictor.preprocessing), name=name)


def predict_array(predictor: Predictor, x: np.ndarray, *, name: str) -> Prediction:
    """One image already preprocessed with ``predictor.preprocessing`` (3, H, W); the model call alone timed."""
    start = time.perf_counter()
    logits = predictor.logits(x[None])
    return Prediction(name, probabilities(predictor, logits)[0], (time.perf_counter() - start) * 1e3)


def agreement(predictions: list[Prediction]) -> float:
    """Share of models that agree with the most common top class."""
    if not predictions:
        return float("nan")
    tops = [p.top for p in predictions]
    return max(tops.count(t) for t in set(tops)) / len(tops)
