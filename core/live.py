"""Predict one uploaded image with one or several deployable variants (the "test an image" panel)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core.classes import CLASSES, clinical_name
from core.data.transforms import center_offset, preprocess_image, square_crop
from core.gradcam import grad_cam, overlay
from core.imaging import CheckedImage
from core.variants import Predictor, TorchPredictor, softmax

DISCLAIMER = ("Research tool, not a diagnosis. The output of this model must not be used to make medical "
              "decisions; see a clinician about any skin lesion that worries you.")


@dataclass
class LivePrediction:
    variant: str
    probs: np.ndarray  # in CLASSES order
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


def predict_checked(predictor: Predictor, checked: CheckedImage, *, name: str) -> LivePrediction:
    """Preprocess with the variant's own preprocessing, run it, and time the model call alone."""
    x = preprocess_image(checked.image, predictor.preprocessing).numpy()
    start = time.perf_counter()
    logits = predictor.logits(x)
    return LivePrediction(name, softmax(logits)[0], (time.perf_counter() - start) * 1e3)


def agreement(predictions: list[LivePrediction]) -> float:
    """Share of variants that agree with the most common top class."""
    if not predictions:
        return float("nan")
    tops = [p.top for p in predictions]
    return max(tops.count(t) for t in set(tops)) / len(tops)


def grad_cam_overlay(predictor: Predictor, checked: CheckedImage):  # noqa: ANN201 - PIL image or None
    """Grad-CAM overlay for PyTorch variants; None for ONNX ones (no gradients there)."""
    if not isinstance(predictor, TorchPredictor) or not hasattr(predictor.model, "forward_features"):
        return None
    batch = preprocess_image(checked.image, predictor.preprocessing)
    model = predictor.model
    if any("quantized" in type(m).__module__ for m in model.modules()):
        return None
    cam = grad_cam(model, batch.to(torch.float32))
    prep = predictor.preprocessing
    square = square_crop(checked.image, size=prep.cache_size, interpolation=prep.interpolation)
    off = center_offset(prep.cache_size, prep.input_size)
    crop = Image.fromarray(square[off:off + prep.input_size, off:off + prep.input_size])  # what the model saw
    return overlay(crop, cam)
