"""Curves over predictions (no store): one-vs-rest and grouped ROC, reliability, the uncalibrated softmax behind
stored probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.calibration import calibrated_softmax
from core.classes import CLASSES


def roc_curves(labels: np.ndarray, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve (fpr, tpr) per class present with both outcomes."""
    from sklearn.metrics import roc_curve  # here: the pages without ROC curves load faster without sklearn

    curves = {}
    for i, c in enumerate(CLASSES):
        positives = labels == i
        if 0 < positives.sum() < len(labels):
            fpr, tpr, _ = roc_curve(positives, probs[:, i])
            curves[c] = (fpr, tpr)
    return curves


def group_roc(labels: np.ndarray, probs: np.ndarray, group: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC (fpr, tpr) and AUC of the summed probability of ``group`` against everything else (the screening
    question: possibly malignant or not); empty where the split lacks one of the two sides."""
    from sklearn.metrics import roc_curve

    from core.triage import group_probability

    positive = np.isin(labels, [CLASSES.index(c) for c in group])
    if positive.all() or not positive.any():
        return np.array([]), np.array([]), float("nan")
    score = group_probability(probs, group)
    fpr, tpr, _ = roc_curve(positive, score)
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def reliability(labels: np.ndarray, probs: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data: per confidence bin, mean confidence, accuracy and count (top-label)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    rows = [{"bin": b, "confidence": conf[bins == b].mean(), "accuracy": correct[bins == b].mean(),
             "count": int((bins == b).sum())} for b in range(n_bins) if (bins == b).any()]
    return pd.DataFrame(rows)


def uncalibrated_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The raw softmax behind stored calibrated probabilities: softmax(T * log p) = softmax(z) when
    p = softmax(z / T), so the reliability before calibration needs no second copy of the predictions."""
    return calibrated_softmax(temperature * np.log(np.clip(probs, 1e-12, 1.0)))
