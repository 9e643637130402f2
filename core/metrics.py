"""Classification metrics for the seven-class problem, and the ISIC 2018 Task 3 submission format.

Balanced accuracy (mean per-class recall, ISIC 2018's ranking metric) is always reported next to accuracy:
nv is two thirds of HAM10000, so a model that says "nv" to everything has 67% accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.calibration import brier_score, calibrated_softmax, negative_log_likelihood
from core.classes import CLASSES, ISIC_COLUMNS
from core.intervals import bootstrap_intervals, interval_metrics, screening_intervals
from core.triage import Triage, referral_metrics, sensitivity_specificity

METRIC_NAMES = ("accuracy", "balanced_accuracy", "auc_macro_ovr", "kappa", "mcc", "ece", "nll", "brier")


@dataclass
class Evaluation:
    """All figures of one evaluation: scalar metrics, per-class table and confusion matrix."""

    metrics: dict[str, float]
    per_class: pd.DataFrame  # index: class; columns precision, recall, f1, support
    confusion: np.ndarray  # rows: true class, columns: predicted class, in CLASSES order


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Each class's recall by name (None for a class absent from ``y_true``)."""
    return {name: float(np.mean(y_pred[y_true == c] == c)) if (y_true == c).any() else None
            for c, name in enumerate(CLASSES)}


def macro_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over classes that have both positives and negatives (NaN if none)."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: the dashboard reads figures without sklearn

    aucs = [roc_auc_score(y_true == c, probs[:, c]) for c in range(probs.shape[1])
            if 0 < np.sum(y_true == c) < len(y_true)]
    return float(np.mean(aucs)) if aucs else math.nan


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15) -> float:
    """Top-label ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, *, classes: tuple[str, ...] = CLASSES,
                         groups: np.ndarray | None = None, triage: Triage | None = None) -> Evaluation:
    """Compute every metric from true labels (class indices) and predicted probabilities (n, k).

    With ``groups`` (each image's lesion id), the figures of :data:`core.intervals.INTERVAL_METRICS` also get
    their 95% lesion-level bootstrap interval (``<name>_ci_low`` / ``<name>_ci_high``). With ``triage`` (the
    model's screening operating points), ``triage_malignant_*`` and ``triage_melanoma_*`` sensitivity and
    specificity at those points are added (with intervals when ``groups`` are given).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(classes)):
        raise ValueError(f"probs must have shape ({len(y_true)}, {len(classes)}), got {probs.shape}")
    if len(y_true) == 0:
        raise ValueError("cannot evaluate an empty set of predictions")
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        matthews_corrcoef,
        precision_recall_fscore_support,
    )

    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "auc_macro_ovr": macro_auc_ovr(y_true, probs),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "ece": expected_calibration_error(y_true, probs),
        "nll": negative_log_likelihood(y_true, probs),
        "brier": brier_score(y_true, probs),
    }
    if groups is not None and classes == CLASSES:
        intervals = bootstrap_intervals(y_true, y_pred, np.asarray(groups))
        metrics.update({name: iv.point for name, iv in intervals.items() if name not in metrics})
        metrics.update(interval_metrics(intervals))
    if triage is not None and classes == CLASSES:
        referrals = referral_metrics(y_true, probs, triage)
        if groups is not None:
            screening = screening_intervals(referrals, np.asarray(groups))
            metrics.update({f"triage_{name}": iv.point for name, iv in screening.items()})
            metrics.update(interval_metrics({f"triage_{name}": iv for name, iv in screening.items()}))
        else:
            for key in ("malignant", "melanoma"):
                metrics[f"triage_{key}_sensitivity"], metrics[f"triage_{key}_specificity"] = sensitivity_specificity(
                    referrals[f"{key}_true"], referrals[f"{key}_referred"])
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support},
                             index=pd.Index(classes, name="class"))
    return Evaluation(metrics, per_class, confusion_matrix(y_true, y_pred, labels=labels))


def evaluate_logits(y_true: np.ndarray, logits: np.ndarray, *, temperature: float = 1.0,
                    groups: np.ndarray | None = None, triage: Triage | None = None) -> Evaluation:
    """:func:`evaluate_predictions` of the calibrated probabilities ``softmax(logits / temperature)``, plus the
    calibration figures of the raw softmax (``ece_uncalibrated``, ``nll_uncalibrated``, ``brier_uncalibrated``)."""
    ev = evaluate_predictions(y_true, calibrated_softmax(logits, temperature), groups=groups, triage=triage)
    raw = calibrated_softmax(logits, 1.0)
    ev.metrics.update(temperature=float(temperature),
                      ece_uncalibrated=expected_calibration_error(np.asarray(y_true), raw),
                      nll_uncalibrated=negative_log_likelihood(y_true, raw),
                      brier_uncalibrated=brier_score(y_true, raw))
    return ev


def format_metrics(metrics: dict[str, float]) -> str:
    """``name=value`` pairs, with ``[low, high]`` after the figures that carry a bootstrap interval."""
    parts = []
    for k, v in metrics.items():
        if k.endswith(("_ci_low", "_ci_high")):
            continue
        low, high = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
        parts.append(f"{k}={v:.4f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""))
    return "  ".join(parts)


def format_evaluation(ev: Evaluation, *, title: str = "") -> str:
    """A plain-text table of all figures, for the terminal."""
    lines = [title] if title else []
    lines.append(format_metrics(ev.metrics))
    lines.append(ev.per_class.to_string(float_format=lambda x: f"{x:.3f}"))
    cm = pd.DataFrame(ev.confusion, index=[f"true {c}" for c in ev.per_class.index], columns=list(ev.per_class.index))
    lines.append(cm.to_string())
    return "\n".join(lines)


def write_isic_submission(path: str | Path, image_ids: list[str], probs: np.ndarray) -> Path:
    """Write predictions as an ISIC 2018 Task 3 submission CSV (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(ISIC_COLUMNS))
    df.insert(0, "image", image_ids)
    df.to_csv(path, index=False, float_format="%.6f")
    return path
