"""Lesion-level bootstrap intervals and paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from core.classes import CLASSES
from core.intervals import bootstrap_intervals, paired_differences
from core.metrics import balanced_accuracy, evaluate_predictions


def _population(n_lesions: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and lesion ids: 1-4 images per lesion, every image of a lesion has the lesion's class."""
    rng = np.random.default_rng(seed)
    lesion_class = rng.choice(len(CLASSES), size=n_lesions, p=[0.11, 0.67, 0.05, 0.03, 0.11, 0.015, 0.015])
    per_lesion = rng.integers(1, 5, size=n_lesions)
    groups = np.repeat(np.arange(n_lesions), per_lesion)
    return lesion_class[groups], groups.astype(str)


def _predict(labels: np.ndarray, groups: np.ndarray, recall: float, *, seed: int) -> np.ndarray:
    """Right for a lesion's images with probability ``recall``, decided per lesion (images of a lesion agree)."""
    rng = np.random.default_rng(seed)
    _, lesion = np.unique(groups, return_inverse=True)
    right = rng.random(lesion.max() + 1) < recall
    return np.where(right[lesion], labels, (labels + 1) % len(CLASSES))


def test_interval_covers_the_true_value_at_about_its_level() -> None:
    """A known truth: the population's balanced accuracy; the interval from a sample of lesions covers it in
    about 95% of repeated samples (coarse check: 40 draws, at least 34 covered)."""
    labels, groups = _population(20000, seed=0)
    preds = _predict(labels, groups, 0.7, seed=1)
    truth = balanced_accuracy(labels, preds)
    lesions = np.unique(groups)
    covered = 0
    for rep in range(40):
        rng = np.random.default_rng(100 + rep)
        pick = np.isin(groups, rng.choice(lesions, size=800, replace=False))
        iv = bootstrap_intervals(labels[pick], preds[pick], groups[pick], replicates=400, seed=rep)
        covered += iv["balanced_accuracy"].contains(truth)
    assert covered >= 34, covered


def test_lesion_resampling_is_wider_than_image_resampling_when_images_repeat() -> None:
    labels, groups = _population(600, seed=2)
    preds = _predict(labels, groups, 0.75, seed=3)
    by_lesion = bootstrap_intervals(labels, preds, groups, replicates=500)["accuracy"]
    by_image = bootstrap_intervals(labels, preds, np.arange(len(labels)).astype(str), replicates=500)["accuracy"]
    assert by_lesion.point == by_image.point
    assert by_lesion.high - by_lesion.low > 1.2 * (by_image.high - by_image.low)


def test_point_estimates_match_the_plain_metrics() -> None:
    labels, groups = _population(500, seed=4)
    preds = _predict(labels, groups, 0.6, seed=5)
    iv = bootstrap_intervals(labels, preds, groups, replicates=50)
    assert iv["balanced_accuracy"].point == pytest.approx(balanced_accuracy(labels, preds))
    assert iv["accuracy"].point == pytest.approx(np.mean(labels == preds))
    mel = labels == CLASSES.index("mel")
    assert iv["mel_recall"].point == pytest.approx(np.mean(preds[mel] == labels[mel]))
    assert iv["balanced_accuracy"].low < iv["balanced_accuracy"].point < iv["balanced_accuracy"].high


def test_paired_difference_is_tighter_than_unpaired_and_finds_a_real_gain() -> None:
    labels, groups = _population(1500, seed=6)
    base = _predict(labels, groups, 0.70, seed=7)
    # b = a, improved on a random 10% of the lesions a got wrong: a real but small gain
    rng = np.random.default_rng(8)
    _, lesion = np.unique(groups, return_inverse=True)
    fixed = rng.random(lesion.max() + 1) < 0.25
    better = np.where(fixed[lesion], labels, base)
    diff = paired_differences(labels, better, base, groups=groups, replicates=1000)
    gain = diff["balanced_accuracy"]
    assert gain.point > 0 and gain.low > 0, gain  # a gain outside the noise
    a = bootstrap_intervals(labels, better, groups, replicates=1000, seed=1)["balanced_accuracy"]
    b = bootstrap_intervals(labels, base, groups, replicates=1000, seed=2)["balanced_accuracy"]
    # unpaired, the difference of two such estimates would be about sqrt(2) times as wide as either alone
    assert gain.high - gain.low < ((a.high - a.low) + (b.high - b.low)) / 2
    same = paired_differences(labels, base, base, groups=groups, replicates=200)["balanced_accuracy"]
    assert same.point == same.low == same.high == 0.0


def test_no_gain_interval_includes_zero() -> None:
    labels, groups = _population(800, seed=9)
    a = _predict(labels, groups, 0.7, seed=10)
    b = _predict(labels, groups, 0.7, seed=11)  # same skill, different luck
    assert paired_differences(labels, a, b, groups=groups, replicates=1000)["balanced_accuracy"].contains(0.0)


def test_evaluation_stores_intervals_with_lesion_ids_and_errors_are_clear() -> None:
    labels, groups = _population(300, seed=12)
    probs = np.eye(len(CLASSES))[_predict(labels, groups, 0.8, seed=13)] * 0.9 + 0.1 / len(CLASSES)
    plain = evaluate_predictions(labels, probs).metrics
    assert "balanced_accuracy_ci_low" not in plain
    grouped = evaluate_predictions(labels, probs, groups=groups).metrics
    assert grouped["balanced_accuracy_ci_low"] < grouped["balanced_accuracy"] < grouped["balanced_accuracy_ci_high"]
    assert {"mel_recall", "malignant_sensitivity", "malignant_specificity"} <= set(grouped)
    with pytest.raises(ValueError, match="one entry per image"):
        bootstrap_intervals(labels, labels, groups[:-1])
