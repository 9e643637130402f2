"""Metrics agree with scikit-learn and with ISIC's own scoring package on fixed predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from core.classes import ISIC_COLUMNS
from core.metrics import evaluate_predictions, expected_calibration_error, write_isic_submission


@pytest.fixture
def fixed_predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    y = rng.choice(7, size=400, p=[0.11, 0.67, 0.05, 0.03, 0.11, 0.015, 0.015])
    logits = rng.normal(size=(400, 7))
    logits[np.arange(400), y] += rng.uniform(0, 3, size=400)  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_agrees_with_sklearn(fixed_predictions: tuple[np.ndarray, np.ndarray]) -> None:
    y, probs = fixed_predictions
    pred = probs.argmax(1)
    ev = evaluate_predictions(y, probs)
    m = ev.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["auc_macro_ovr"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    np.testing.assert_allclose(ev.per_class[["precision", "recall", "f1"]].to_numpy(), np.c_[p, r, f])
    np.testing.assert_array_equal(ev.per_class["support"].to_numpy(), s)
    np.testing.assert_array_equal(ev.confusion, skm.confusion_matrix(y, pred, labels=range(7)))
    assert m["balanced_accuracy"] < m["accuracy"]  # nv-dominated: the two must both be reported


def test_balanced_accuracy_agrees_with_isic_scoring(fixed_predictions: tuple[np.ndarray, np.ndarray]) -> None:
    from isic_challenge_scoring.metrics import balanced_multiclass_accuracy

    y, probs = fixed_predictions
    truth = pd.DataFrame(np.eye(7)[y], columns=list(ISIC_COLUMNS))
    pred = pd.DataFrame(probs, columns=list(ISIC_COLUMNS))
    isic = balanced_multiclass_accuracy(truth, pred, pd.Series(np.ones(len(y))))
    assert evaluate_predictions(y, probs).metrics["balanced_accuracy"] == pytest.approx(isic)


def test_ece_hand_computed() -> None:
    # Two bins used: confidence 0.9 (2 samples, 1 correct) and 0.6 (2 samples, 2 correct).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)


def test_absent_class_and_bad_shapes() -> None:
    y = np.array([1, 1, 0, 0])
    probs = np.full((4, 7), 1 / 7)
    probs[[0, 1], 1] = 0.9
    ev = evaluate_predictions(y, probs)
    assert ev.per_class.loc["vasc", "support"] == 0
    assert 0 <= ev.metrics["auc_macro_ovr"] <= 1
    with pytest.raises(ValueError, match="probs must have shape"):
        evaluate_predictions(y, probs[:, :3])


def test_isic_submission_csv(tmp_path: Path, fixed_predictions: tuple[np.ndarray, np.ndarray]) -> None:
    _, probs = fixed_predictions
    path = write_isic_submission(tmp_path / "sub.csv", [f"ISIC_{i:07d}" for i in range(len(probs))], probs)
    df = pd.read_csv(path)
    assert list(df.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    np.testing.assert_allclose(df[list(ISIC_COLUMNS)].to_numpy(), probs, atol=1e-6)
