"""95% bootstrap intervals that resample lesions, not images, and paired differences between two models.

HAM10000 has several images of most lesions; images of one lesion are not independent, so a bootstrap over
images would give intervals that are too narrow. Each replicate draws lesions with replacement and gives every
image of a drawn lesion that lesion's count as its weight. A paired difference scores both models on the same
replicate (the same lesions), so the noise shared by the two cancels and only their disagreement is left.

The figures are ratios of weighted counts, so all replicates are computed at once from a weight matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.classes import CLASSES, POSSIBLY_MALIGNANT

DEFAULT_REPLICATES = 2000
INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "mel_recall", "malignant_sensitivity",
                    "malignant_specificity")
_MALIGNANT = np.array([CLASSES.index(c) for c in sorted(POSSIBLY_MALIGNANT)])


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval (``level`` coverage)."""

    point: float
    low: float
    high: float
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _weighted_figures(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :data:`INTERVAL_METRICS` for each row of ``weights`` (replicates x images)."""
    correct = (y_pred == y_true).astype(weights.dtype)
    total = weights.sum(axis=1)
    recalls = []
    for c in range(len(CLASSES)):
        mask = (y_true == c).astype(weights.dtype)
        denom = weights @ mask
        recalls.append(np.where(denom > 0, weights @ (mask * correct) / np.where(denom > 0, denom, 1), np.nan))
    recalls = np.stack(recalls, axis=1)  # replicates x classes; NaN where a class drew no image
    true_mal = np.isin(y_true, _MALIGNANT).astype(weights.dtype)
    pred_mal = np.isin(y_pred, _MALIGNANT).astype(weights.dtype)
    pos, neg = weights @ true_mal, weights @ (1 - true_mal)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dict(zip(INTERVAL_METRICS, (
            weights @ correct / total,
            np.nanmean(recalls, axis=1),
            recalls[:, CLASSES.index("mel")],
            np.where(pos > 0, weights @ (true_mal * pred_mal) / pos, np.nan),
            np.where(neg > 0, weights @ ((1 - true_mal) * (1 - pred_mal)) / neg, np.nan)), strict=True))


def _lesion_weights(groups: np.ndarray, *, replicates: int, seed: int) -> np.ndarray:
    """Replicates x images: how often each image's lesion was drawn (the first row is the sample itself)."""
    _, lesion_of_image = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_lesions = lesion_of_image.max() + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_lesions, size=(replicates, n_lesions))
    flat = (draws + np.arange(replicates)[:, None] * n_lesions).ravel()
    counts = np.bincount(flat, minlength=replicates * n_lesions).reshape(replicates, n_lesions)
    counts = np.vstack([np.ones((1, n_lesions)), counts]).astype(np.float32)
    return counts[:, lesion_of_image]


def _check(y_true: np.ndarray, groups: np.ndarray, *preds: np.ndarray) -> None:
    if len(groups) != len(y_true) or any(len(p) != len(y_true) for p in preds):
        raise ValueError(f"labels ({len(y_true)}), predictions ({', '.join(str(len(p)) for p in preds)}) and "
                         f"lesion ids ({len(groups)}) must have one entry per image")
    if len(y_true) == 0:
        raise ValueError("cannot bootstrap an empty set of predictions")


def _percentiles(point: np.ndarray, reps: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(reps, [tail, 100 - tail]) if np.isfinite(reps).any() else (np.nan, np.nan)
    return Interval(float(point), float(low), float(high), level)


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *,
                        replicates: int = DEFAULT_REPLICATES, level: float = 0.95, seed: int = 0
                        ) -> dict[str, Interval]:
    """Each metric of :data:`INTERVAL_METRICS` with its lesion-level percentile bootstrap interval.

    Args:
        y_true, y_pred: class indices per image.
        groups: the lesion id of each image (images of one lesion are drawn together).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check(y_true, groups, y_pred)
    figures = _weighted_figures(y_true, y_pred, _lesion_weights(groups, replicates=replicates, seed=seed))
    return {name: _percentiles(values[0], values[1:], level) for name, values in figures.items()}


def paired_differences(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, *, groups: np.ndarray,
                       replicates: int = DEFAULT_REPLICATES, level: float = 0.95, seed: int = 0
                       ) -> dict[str, Interval]:
    """``a - b`` for each metric on the same images, with an interval from the same lesion draws for both."""
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    _check(y_true, groups, pred_a, pred_b)
    weights = _lesion_weights(groups, replicates=replicates, seed=seed)
    a, b = _weighted_figures(y_true, pred_a, weights), _weighted_figures(y_true, pred_b, weights)
    return {name: _percentiles(a[name][0] - b[name][0], a[name][1:] - b[name][1:], level) for name in a}


def screening_intervals(truth: dict[str, np.ndarray], groups: np.ndarray, *,
                        replicates: int = DEFAULT_REPLICATES, level: float = 0.95, seed: int = 0
                        ) -> dict[str, Interval]:
    """Sensitivity and specificity of binary referrals with lesion-level intervals.

    ``truth`` holds pairs ``<name>_true`` / ``<name>_referred`` (booleans per image, e.g. from
    :func:`core.triage.referral_metrics`); the result has ``<name>_sensitivity`` and ``<name>_specificity``.
    """
    weights = _lesion_weights(groups, replicates=replicates, seed=seed)
    out = {}
    for key in [k[:-len("_true")] for k in truth if k.endswith("_true")]:
        positive = truth[f"{key}_true"].astype(weights.dtype)
        referred = truth[f"{key}_referred"].astype(weights.dtype)
        _check(positive, groups, referred)
        pos, neg = weights @ positive, weights @ (1 - positive)
        with np.errstate(invalid="ignore", divide="ignore"):
            figures = {"sensitivity": np.where(pos > 0, weights @ (positive * referred) / pos, np.nan),
                       "specificity": np.where(neg > 0, weights @ ((1 - positive) * (1 - referred)) / neg, np.nan)}
        for name, values in figures.items():
            out[f"{key}_{name}"] = _percentiles(values[0], values[1:], level)
    return out


def interval_metrics(intervals: dict[str, Interval], *, prefix: str = "") -> dict[str, float]:
    """Flat store rows: ``<prefix><name>_ci_low`` / ``_ci_high`` (and ``<prefix><name>`` for differences)."""
    out: dict[str, float] = {}
    for name, iv in intervals.items():
        if prefix:
            out[f"{prefix}{name}"] = iv.point
        out[f"{prefix}{name}_ci_low"], out[f"{prefix}{name}_ci_high"] = iv.low, iv.high
    return out
