"""Calibrated probabilities: temperature scaling (Guo et al., 2017) and the "uncertain" threshold.

Both are fitted on the validation split of the model they belong to and travel in its card, so every
predictor of that model (site, dashboard, evaluation) applies the same ones. Temperature scaling divides the
logits by one scalar ``T``: it changes the confidence, never the predicted class.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

DEFAULT_TARGET_ACCURACY = 0.9  # accuracy asked of the predictions shown without the "uncertain" flag


def calibrated_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits / temperature`` along the class axis."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class)."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared distance between the probability vector and the one-hot label (multi-class Brier)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (searched on log T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no predictions")

    def nll(log_t: float) -> float:
        return -log_softmax(logits / math.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    result = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))


def uncertain_threshold(labels: np.ndarray, probs: np.ndarray, *,
                        target_accuracy: float = DEFAULT_TARGET_ACCURACY) -> float:
    """The lowest confidence ``c`` such that predictions with confidence >= ``c`` are right at least
    ``target_accuracy`` of the time; below it a prediction is flagged "uncertain". 1.0 when no ``c`` qualifies
    (every prediction is then flagged)."""
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    accuracy_above = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(accuracy_above >= target_accuracy)
    if len(ok) == 0:
        return 1.0
    # the last position (lowest confidence) at which the accuracy of everything above it still meets the target
    return float(confidence[order][ok[-1]])


def fit_calibration(logits: np.ndarray, labels: np.ndarray, *,
                    target_accuracy: float = DEFAULT_TARGET_ACCURACY) -> tuple[float, float]:
    """Temperature and "uncertain" threshold of a model from its validation logits and labels."""
    temperature = fit_temperature(logits, labels)
    return temperature, uncertain_threshold(labels, calibrated_softmax(logits, temperature),
                                            target_accuracy=target_accuracy)
