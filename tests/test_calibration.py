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
from core.errors import ModelError
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
    incomplete = card.to_dict()
    del incomplete["temperature"], incomplete["uncertain_threshold"]
    with pytest.raises(ModelError, match="missing temperature, uncertain_threshold"):  # never a silent T = 1
        Card.from_dict(incomplete)
    with pytest.raises(ModelError, match=r"card format 'lesionlite-variant/1'.*scripts.upgrade_artifacts"):
        Card.from_dict({**card.to_dict(), "format": "lesionlite-variant/1"})

    from core.train.parent import load_parent

    loader = load_parent(str(trained_tiny.run_dir)).split.loader("val", batch_size=64)
    calibrated, labels = predict_batches(load_predictor(folder), loader)
    raw = json.loads((folder / "card.json").read_text())
    raw["temperature"] = 1.0
    (folder / "card.json").write_text(json.dumps(raw))
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


def test_artifacts_of_earlier_versions_are_refused_with_the_command_that_upgrades_them_once(
        sweep_store: Path, trained_tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import run_cli
    from core.store.results import ResultsStore
    from scripts import upgrade_artifacts

    # An earlier trained-model folder (model.json) and two earlier variants (model_card.json), one never calibrated.
    parent = tmp_path / "models" / trained_tiny.run_id
    shutil.copytree(trained_tiny.run_dir, parent)
    card = json.loads((parent / "card.json").read_text())
    (parent / "card.json").unlink()
    (parent / "model.json").write_text(json.dumps({**card, "format": "lesionlite-model/1"}))
    root = tmp_path / "variants"
    for name in ("dense-static", "pruned-0.5-fp32"):
        shutil.copytree(next((sweep_store.parent / "variants").glob(f"*/{name}")), root / name)
        raw = json.loads((root / name / "card.json").read_text())
        (root / name / "card.json").unlink()
        raw.update(format="lesionlite-variant/1", parent_dir=str(parent))
        if name == "dense-static":  # as cards were written before calibration existed
            for key in ("uncertain_threshold", "calibration", "temperature", "triage"):
                raw.pop(key, None)
        (root / name / "model_card.json").write_text(json.dumps(raw))
    for folder in (parent, root / "dense-static"):
        with pytest.raises(ModelError, match=f"earlier version.*upgrade_artifacts {folder}"):
            load_predictor(str(folder))
    db = tmp_path / "old.duckdb"
    shutil.copyfile(sweep_store, db)
    with ResultsStore(db) as store:  # as stores were written before card.json and before families were named
        store.con.execute("UPDATE artifacts SET path = replace(path, 'card.json', 'model_card.json')")
        store.con.execute("UPDATE runs SET config = json_merge_patch(config, '{\"family\": null}') "
                          "WHERE variant = 'pruned-0.5-static'")

    args = [str(tmp_path / "models"), str(root), "--db", str(db), "--models-dir", str(tmp_path / "models")]
    assert run_cli(upgrade_artifacts.main, upgrade_artifacts.get_args_parser(), args) == 0
    out = capsys.readouterr().out
    assert "3 folder(s) upgraded, 1 of them calibrated now" in out
    assert out.index(str(parent)) < out.index(str(root / "dense-static"))  # the parent first: variants read it
    fixed = read_variant_card(root / "dense-static")
    assert fixed.uncertain_threshold is not None and fixed.temperature != 1.0 and fixed.triage is not None
    assert fixed.extra["calibration"]["by"] == "upgrade" and "val_ece_after" in fixed.extra["calibration"]
    assert not list(tmp_path.rglob("model_card.json")) and not list(tmp_path.rglob("model.json"))
    assert load_predictor(str(parent)).card.run_id == trained_tiny.run_id
    with ResultsStore(db, read_only=True) as store:
        assert store.query("SELECT count(*) n FROM artifacts WHERE path LIKE '%model_card.json'")["n"][0] == 0
        assert store.query("SELECT count(*) n FROM runs WHERE kind = 'variant' AND "
                           "json_extract_string(config, '$.family') IS NULL")["n"][0] == 0
    assert run_cli(upgrade_artifacts.main, upgrade_artifacts.get_args_parser(), args) == 0  # once: nothing left
    assert "0 folder(s) upgraded" in capsys.readouterr().out
