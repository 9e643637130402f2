"""Temperature scaling and the "uncertain" threshold: fitted on validation, carried by the card, applied by
every predictor."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.artifacts.card import Card, read_variant_card
from core.calibration import calibrated_softmax, fit_calibration, fit_temperature, uncertain_threshold
from core.compress.kinds import KINDS
from core.errors import ModelError
from core.jobs.upgrade import family_from_name
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
    assert card.calibration.fitted_on == "val"
    again = Card.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card and again.deployment.latency.threads == 1 and again.compression.quantization == "static"
    incomplete = card.to_dict()
    del incomplete["calibration"]["temperature"]
    with pytest.raises(ModelError, match="incomplete calibration record.*temperature"):  # never a silent T = 1
        Card.from_dict(incomplete)
    with pytest.raises(ModelError, match="missing calibration"):
        Card.from_dict({k: v for k, v in card.to_dict().items() if k != "calibration"})
    with pytest.raises(ModelError, match="unknown deployment field.*size_mb.*allowed: export_check, latency"):
        Card.from_dict({**card.to_dict(), "deployment": {**card.to_dict()["deployment"], "size_mb": 1.0}})
    with pytest.raises(ModelError, match=r"card format 'lesionlite-variant/1'.*scripts.upgrade_artifacts"):
        Card.from_dict({**card.to_dict(), "format": "lesionlite-variant/1"})

    from core.train.parent import load_parent

    loader = load_parent(str(trained_tiny.run_dir)).split.loader("val", batch_size=64)
    calibrated, labels = predict_batches(load_predictor(folder), loader)
    raw = json.loads((folder / "card.json").read_text())
    raw["calibration"]["temperature"] = 1.0
    (folder / "card.json").write_text(json.dumps(raw))
    plain, _ = predict_batches(load_predictor(folder), loader)
    assert (calibrated.argmax(1) == plain.argmax(1)).all()
    if card.temperature != pytest.approx(1.0, abs=1e-3):
        assert not np.allclose(calibrated, plain)
    np.testing.assert_allclose(calibrated, calibrated_softmax(np.log(plain), card.temperature), atol=1e-5)


def test_raw_softmax_is_recovered_from_stored_calibrated_probabilities() -> None:
    from core.curves import uncalibrated_probs

    logits, _ = miscalibrated(50)
    stored = calibrated_softmax(logits, 2.5)
    np.testing.assert_allclose(uncalibrated_probs(stored, 2.5), calibrated_softmax(logits), atol=1e-9)


def as_flat(card: dict) -> dict:
    """A card as versions 1 and 2 wrote it: every fact at the top level (no typed records; no fusion, which they
    never had)."""
    flat = {k: v for k, v in card.items() if k not in ("origin", "calibration", "compression", "deployment", "fusion")}
    calibration = dict(card["calibration"])
    flat.update(card["origin"], temperature=calibration.pop("temperature"),
                uncertain_threshold=calibration.pop("uncertain_threshold"),
                calibration={**calibration.pop("notes"), **calibration})
    flat.update(card["compression"] or {})
    if card["deployment"]:
        deployment = card["deployment"]
        flat.update(size_bytes=deployment["size_bytes"], runtime=deployment["runtime"],
                    latency_ms=deployment["latency"], export_check=deployment["export_check"])
    return flat


def test_artifacts_of_earlier_versions_are_refused_with_the_command_that_upgrades_them_once(
        sweep_store: Path, trained_tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import run_cli
    from core.store.results import ResultsStore
    from scripts import upgrade_artifacts

    # An earlier trained-model folder (model.json, version 1), an earlier variant never calibrated (model_card.json,
    # version 1) and one of version 2 (card.json, every fact at the top level).
    parent = tmp_path / "models" / trained_tiny.run_id
    shutil.copytree(trained_tiny.run_dir, parent)
    card = json.loads((parent / "card.json").read_text())
    (parent / "card.json").unlink()
    (parent / "model.json").write_text(json.dumps({**as_flat(card), "format": "lesionlite-model/1"}))
    root = tmp_path / "variants"
    for name in ("dense-static", "pruned-0.5-fp32"):
        shutil.copytree(next((sweep_store.parent / "variants").glob(f"*/{name}")), root / name)
        raw = as_flat(json.loads((root / name / "card.json").read_text()))
        raw.update(parent_dir=str(parent))
        if name == "dense-static":  # as cards were written before calibration existed
            for key in ("uncertain_threshold", "calibration", "temperature", "triage"):
                raw.pop(key, None)
            (root / name / "card.json").unlink()
            (root / name / "model_card.json").write_text(json.dumps({**raw, "format": "lesionlite-variant/1"}))
        else:
            (root / name / "card.json").write_text(json.dumps({**raw, "format": "lesionlite-card/2"}))
    kept = read_variant_card(next((sweep_store.parent / "variants").glob("*/pruned-0.5-fp32")))
    for folder in (parent, root / "dense-static"):
        with pytest.raises(ModelError, match=f"earlier version.*upgrade_artifacts {folder}"):
            load_predictor(str(folder))
    with pytest.raises(ModelError, match="card format 'lesionlite-card/2'.*upgrade it once: python -m scripts"):
        load_predictor(str(root / "pruned-0.5-fp32"))
    db = tmp_path / "old.duckdb"
    shutil.copyfile(sweep_store, db)
    with ResultsStore(db) as store:  # as stores were written before card.json and before families were named
        store.con.execute("UPDATE artifacts SET path = replace(path, 'card.json', 'model_card.json')")
        store.con.execute("UPDATE runs SET config = json_merge_patch(config, '{\"family\": null}') "
                          "WHERE variant = 'pruned-0.5-static'")
        # the label an earlier version of the upgrade wrote for prune-then-train cells (one family shown as two)
        store.con.execute("UPDATE runs SET config = json_merge_patch(config, '{\"family\": \"pruned then trained\"}') "
                          "WHERE variant = 'pruned-0.5-fp32'")

    args = [str(tmp_path / "models"), str(root), "--db", str(db), "--models-dir", str(tmp_path / "models")]
    assert run_cli(upgrade_artifacts.main, upgrade_artifacts.get_args_parser(), args) == 0
    out = capsys.readouterr().out
    assert "3 folder(s) upgraded, 1 of them calibrated now" in out
    assert out.index(str(parent)) < out.index(str(root / "dense-static"))  # the parent first: variants read it
    fixed = read_variant_card(root / "dense-static")
    assert fixed.uncertain_threshold is not None and fixed.temperature != 1.0 and fixed.triage is not None
    assert fixed.calibration.notes["by"] == "upgrade" and "val_ece_after" in fixed.calibration.notes
    assert not list(tmp_path.rglob("model_card.json")) and not list(tmp_path.rglob("model.json"))
    upgraded = read_variant_card(root / "pruned-0.5-fp32")  # every fact of version 2 is in its typed record
    assert dataclasses.replace(upgraded, origin=dataclasses.replace(upgraded.origin, parent_dir=None)) == \
        dataclasses.replace(kept, origin=dataclasses.replace(kept.origin, parent_dir=None))
    assert load_predictor(str(parent)).card.run_id == trained_tiny.run_id
    with ResultsStore(db, read_only=True) as store:
        assert store.query("SELECT count(*) n FROM artifacts WHERE path LIKE '%model_card.json'")["n"][0] == 0
        assert store.query("SELECT count(*) n FROM runs WHERE kind = 'variant' AND "
                           "json_extract_string(config, '$.family') IS NULL")["n"][0] == 0
        families = store.query("SELECT DISTINCT json_extract_string(config, '$.family') f FROM runs "
                               "WHERE kind = 'variant'")["f"].tolist()
        assert "pruned then trained" not in families and "pruned, then trained" in families
    assert family_from_name("ptt-0.5-fp32") == KINDS["retrained"].family  # the sweep's label, one spelling
    assert run_cli(upgrade_artifacts.main, upgrade_artifacts.get_args_parser(), args) == 0  # once: nothing left
    assert "0 folder(s) upgraded" in capsys.readouterr().out
