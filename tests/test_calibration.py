"""Temperature scaling and the "uncertain" threshold: fitted on validation, carried by the card, applied by
every predictor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.artifacts.card import Card, read_variant_card
from core.calibration import calibrated_softmax, fit_calibration, fit_temperature, uncertain_threshold
from core.metrics import evaluate_logits, expected_calibration_error
from core.serve.predict import load_predictor, predict_batches


def miscalibrated(n: int = 4000, *, overconfidence: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported as logits ``overconfidence * z``: a model that is too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, 7))
    p = calibrated_softmax(z)
    labels = np.array([rng.choice(7, p=row) for row in p])
    return overconfidence * z, labels


def test_temperature_undoes_overconfidence_and_ece_drops() -> None:
    logits, labels = miscalibrated()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(labels, calibrated_softmax(logits))
    after = expected_calibration_error(labels, calibrated_softmax(logits, t))
    assert before > 0.15 and after < 0.04
    ev = evaluate_logits(labels, logits, temperature=t)
    assert ev.metrics["ece_uncalibrated"] == pytest.approx(before) and ev.metrics["ece"] == pytest.approx(after)
    assert ev.metrics["nll"] < ev.metrics["nll_uncalibrated"] and ev.metrics["brier"] < ev.metrics["brier_uncalibrated"]
    # the class never changes, so neither does any accuracy figure
    assert ev.metrics["balanced_accuracy"] == evaluate_logits(labels, logits).metrics["balanced_accuracy"]


def test_uncertain_threshold_meets_the_target_accuracy_above_it() -> None:
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    labels = np.array([0, 0, 0, 1, 0, 1])  # right, right, right, wrong, right, wrong
    assert uncertain_threshold(labels, probs, target_accuracy=1.0) == pytest.approx(0.8)
    assert uncertain_threshold(labels, probs, target_accuracy=0.85) == pytest.approx(0.8)  # 0.6 gives 4 of 5
    assert uncertain_threshold(labels, probs, target_accuracy=0.75) == pytest.approx(0.6)  # 4 of 5 at or above 0.6
    assert uncertain_threshold(labels, probs, target_accuracy=0.6) == pytest.approx(0.55)  # 4 of 6
    assert uncertain_threshold(np.array([1, 1]), probs[:2], target_accuracy=0.9) == 1.0  # nothing qualifies
    with pytest.raises(ValueError, match="target_accuracy"):
        uncertain_threshold(labels, probs, target_accuracy=0)
    logits, y = miscalibrated()
    t, threshold = fit_calibration(logits, y, target_accuracy=0.8)
    confident = calibrated_softmax(logits, t).max(axis=1) >= threshold
    assert 0 < confident.mean() < 1
    assert (calibrated_softmax(logits, t).argmax(1)[confident] == y[confident]).mean() >= 0.8


def test_card_round_trip_and_every_predictor_applies_the_temperature(sweep_store: Path, tmp_path: Path,
                                                                     trained_tiny) -> None:
    folder = tmp_path / "variant"
    shutil.copytree(next((sweep_store.parent / "variants").glob("*/pruned-0.5-static")), folder)
    card = read_variant_card(folder)
    assert card.temperature > 0 and card.uncertain_threshold is not None  # the sweep calibrated it on val
    assert card.extra["calibration"]["fitted_on"] == "val"
    again = Card.from_dict(json.loads(json.dumps(card.to_dict())))
    assert (again.temperature, again.uncertain_threshold) == (card.temperature, card.uncertain_threshold)
    old = card.to_dict()
    del old["temperature"], old["uncertain_threshold"]
    assert Card.from_dict(old).temperature == 1.0 and Card.from_dict(old).uncertain_threshold is None

    from core.jobs.sweep import load_parent

    loader = load_parent(str(trained_tiny.run_dir)).split.loader("val", batch_size=64)
    calibrated, labels = predict_batches(load_predictor(folder), loader)
    raw = json.loads((folder / "model_card.json").read_text())
    raw["temperature"] = 1.0
    (folder / "model_card.json").write_text(json.dumps(raw))
    plain, _ = predict_batches(load_predictor(folder), loader)
    assert (calibrated.argmax(1) == plain.argmax(1)).all()
    if card.temperature != pytest.approx(1.0, abs=1e-3):
        assert not np.allclose(calibrated, plain)
    np.testing.assert_allclose(calibrated, calibrated_softmax(np.log(plain), card.temperature), atol=1e-5)


def test_raw_softmax_is_recovered_from_stored_calibrated_probabilities() -> None:
    from core.store.analysis import uncalibrated_probs

    logits, _ = miscalibrated(50)
    stored = calibrated_softmax(logits, 2.5)
    np.testing.assert_allclose(uncalibrated_probs(stored, 2.5), calibrated_softmax(logits), atol=1e-9)


def test_old_variant_folders_get_calibrated_cards(sweep_store: Path, trained_tiny, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import run_cli
    from scripts import calibrate_variants

    root = tmp_path / "variants"
    for name in ("dense-static", "pruned-0.5-fp32"):
        shutil.copytree(next((sweep_store.parent / "variants").glob(f"*/{name}")), root / name)
    old = root / "dense-static" / "model_card.json"
    card = json.loads(old.read_text())
    for key in ("uncertain_threshold", "calibration"):
        card.pop(key, None)
    card["temperature"] = 1.0
    old.write_text(json.dumps(card))  # as cards were written before calibration existed
    args = [str(root), "--models-dir", str(trained_tiny.run_dir.parent)]
    assert run_cli(calibrate_variants.main, calibrate_variants.get_args_parser(), args) == 0
    out = capsys.readouterr().out
    assert "1 of 2 variant folders calibrated" in out  # the calibrated one is left alone without --force
    fixed = json.loads(old.read_text())
    assert fixed["uncertain_threshold"] is not None and fixed["calibration"]["fitted_on"] == "val"
    assert fixed["temperature"] != 1.0 and "val_ece_after" in fixed["calibration"]
    assert load_predictor(str(root / "dense-static")).card.temperature == fixed["temperature"]
    assert run_cli(calibrate_variants.main, calibrate_variants.get_args_parser(), [*args, "--force"]) == 0
    assert "2 of 2 variant folders calibrated" in capsys.readouterr().out
