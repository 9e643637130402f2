"""Batch prediction and evaluation of a PyTorch model over a data loader."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from core.metrics import Evaluation, evaluate_predictions

if TYPE_CHECKING:
    from core.variants import Predictor


@torch.inference_mode()
def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, *,
                  channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and true labels for every sample of ``loader``, in order."""
    model.eval()
    probs, labels = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(np.asarray(targets))
    return np.concatenate(probs), np.concatenate(labels)


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, *,
             channels_last: bool = False) -> tuple[Evaluation, np.ndarray]:
    """All metrics of ``model`` on ``loader``; also returns the probabilities."""
    probs, labels = predict_probs(model, loader, device, channels_last=channels_last)
    return evaluate_predictions(labels, probs), probs


def predictor_probs(predictor: Predictor, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels from any :class:`core.variants.Predictor` (PyTorch or ONNX)."""
    from core.variants import softmax

    probs, labels = [], []
    for images, targets in loader:
        probs.append(softmax(predictor.logits(images.numpy())))
        labels.append(np.asarray(targets))
    return np.concatenate(probs), np.concatenate(labels)
