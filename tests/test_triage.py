"""The screening decision (issue 20): an operating point fitted for a stated sensitivity, carried by the card,
applied by evaluation, and advice that never gets calmer when the model is less sure."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.artifacts.card import Card
from core.artifacts.records import Origin
from core.classes import CLASSES
from core.data.transforms import Preprocessing
from core.metrics import evaluate_predictions
from core.triage import (
    ADVICE_FLOOR,
    APPOINTMENT,
    URGENT,
    WATCH,
    Triage,
    decide,
    fit_operating_point,
    fit_triage,
    group_probability,
)

MEL, NV, BCC, BKL = (CLASSES.index(c) for c in ("mel", "nv", "bcc", "bkl"))


def _probs(**p: float) -> np.ndarray:
    vector = np.array([p.get(c, 0.0) for c in CLASSES])
    return vector / vector.sum()


def _synthetic(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose malignant share ranks the malignant images higher (but not perfectly)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(CLASSES), size=n, p=[0.15, 0.55, 0.08, 0.05, 0.1, 0.03, 0.04])
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_the_operating_point_reaches_the_requested_sensitivity_and_no_more_than_needed(target: float) -> None:
    labels, probs = _synthetic()
    point = fit_triage(labels, probs, malignant_sensitivity=target).malignant
    score = group_probability(probs, point.group)
    positive = np.isin(labels, [CLASSES.index(c) for c in point.group])
    assert point.val_sensitivity >= target and (score[positive] >= point.threshold).mean() == point.val_sensitivity
    # the most specific such point: any higher threshold misses the target
    above = np.unique(score[positive][score[positive] > point.threshold])
    if len(above):
        assert (score[positive] >= above[0]).mean() < target
    assert point.val_specificity == pytest.approx((score[~positive] < point.threshold).mean())


def test_fitting_needs_images_in_and_outside_the_group() -> None:
    with pytest.raises(ValueError, match="needs images in and outside"):
        fit_operating_point(np.full(5, NV), np.tile(_probs(nv=1), (5, 1)), group=("mel",), target_sensitivity=0.9)
    with pytest.raises(ValueError, match="unknown class"):
        group_probability(np.zeros((1, 7)), ("melanoma",))


def test_the_card_carries_the_operating_points() -> None:
    labels, probs = _synthetic()
    triage = fit_triage(labels, probs)
    prep = Preprocessing(160, (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic")
    card = Card(run_id="r", architecture="a", preprocessing=prep, triage=triage, origin=Origin.untrained())
    again = Card.from_dict(card.to_dict())
    assert again.triage == triage and again.to_dict()["triage"]["fitted_on"] == "val"
    assert Card.from_dict({**card.to_dict(), "triage": None}).triage is None  # cards written before it


def test_evaluation_reports_sensitivity_and_specificity_at_the_operating_point_with_intervals() -> None:
    labels, probs = _synthetic()
    triage = fit_triage(labels, probs)
    lesions = np.arange(len(labels)) // 2
    m = evaluate_predictions(labels, probs, groups=lesions, triage=triage).metrics
    assert m["triage_malignant_sensitivity"] == pytest.approx(triage.malignant.val_sensitivity)
    assert m["triage_melanoma_sensitivity"] == pytest.approx(triage.melanoma.val_sensitivity)
    for key in ("malignant_sensitivity", "malignant_specificity", "melanoma_sensitivity"):
        assert m[f"triage_{key}_ci_low"] <= m[f"triage_{key}"] <= m[f"triage_{key}_ci_high"]


def test_an_uncertain_melanoma_leaning_result_is_as_urgent_as_a_confident_one() -> None:
    """The issue's case: best guess melanoma at 55%, possibly-malignant share 64%: not 'within a few weeks'."""
    uncertain = decide(_probs(mel=0.55, bcc=0.05, akiec=0.04, nv=0.30, bkl=0.06), None, uncertain=True)
    confident = decide(_probs(mel=0.95, nv=0.05), None, uncertain=False)
    assert uncertain.urgency == confident.urgency == URGENT
    assert "within two weeks" in uncertain.next_step


def test_doubt_never_makes_the_advice_calmer() -> None:
    """With the same possibly-malignant probabilities, spreading the benign share over more classes (a less
    confident result) never lowers the urgency, with or without an operating point."""
    rng = np.random.default_rng(1)
    triage = fit_triage(*_synthetic())
    benign = [CLASSES.index(c) for c in ("nv", "bkl", "df", "vasc")]
    for _ in range(500):
        p = rng.dirichlet(np.full(len(CLASSES), 0.3))
        q = p.copy()
        q[benign] = p[benign].sum() / len(benign)  # the same benign mass, spread evenly: less confident
        for t in (None, triage):
            assert decide(q, t, uncertain=False).urgency >= decide(p, t, uncertain=False).urgency, (p, q)


def test_a_plausible_malignant_class_or_the_operating_point_raises_the_advice() -> None:
    assert decide(_probs(nv=0.9, bkl=0.1), None, uncertain=False).urgency == WATCH
    assert decide(_probs(nv=0.7, bcc=ADVICE_FLOOR + 0.01, bkl=0.09), None, uncertain=False).urgency == APPOINTMENT
    labels, probs = _synthetic()
    triage = fit_triage(labels, probs)
    share = triage.malignant.threshold  # benign top class, malignant share just at the operating point
    p = _probs(nv=1 - share, akiec=share)
    decision = decide(p, triage, uncertain=False)
    assert decision.refer and decision.urgency >= APPOINTMENT and decision.operating_point
    assert decide(p, None, uncertain=False).refer is False


def test_training_and_sweep_cells_fit_and_report_the_operating_points(trained_tiny, sweep_store) -> None:
    """Every trained model's and every sweep cell's card carries both operating points fitted on val, and their
    test sensitivity / specificity is stored with intervals."""
    from core.artifacts.card import read_trained_card
    from core.store.results import ResultsStore

    card = read_trained_card(trained_tiny.run_dir)
    assert card.triage is not None and card.triage.malignant.val_sensitivity >= 0.9
    assert card.triage.melanoma.val_sensitivity >= 0.85
    with ResultsStore(sweep_store, read_only=True) as store:
        rows = store.query("SELECT r.run_id, m.value FROM runs r JOIN metrics m ON m.run_id = r.run_id "
                           "WHERE r.kind = 'variant' AND m.split = 'test' AND m.name = 'triage_malignant_sensitivity'")
        cells = store.query("SELECT count(*) AS n FROM runs WHERE kind = 'variant'")["n"][0]
        lows = store.query("SELECT count(*) AS n FROM metrics m JOIN runs r ON m.run_id = r.run_id WHERE "
                           "r.kind = 'variant' AND split = 'test' AND name = 'triage_malignant_sensitivity_ci_low'"
                           )["n"][0]
    assert len(rows) == cells and rows["value"].between(0, 1).all() and lows == cells


@pytest.mark.parametrize("floor", [0.05, ADVICE_FLOOR, 0.5])
def test_uncertain_is_never_told_usually_harmless_and_the_lines_agree(monkeypatch: pytest.MonkeyPatch,
                                                                      floor: float) -> None:
    """Property over random probability vectors, for every combination of uncertain / operating point (none, the
    fitted one, and thresholds so high that nothing is referred) / advice floor: an uncertain result's next step
    is at least an appointment, the flag travels with the decision, and the batch rule is the single-image rule."""
    import core.triage as triage_mod

    monkeypatch.setattr(triage_mod, "ADVICE_FLOOR", floor)
    rng = np.random.default_rng(7)
    fitted = fit_triage(*_synthetic())
    never = Triage(replace(fitted.malignant, threshold=2.0), replace(fitted.melanoma, threshold=2.0))
    probs = np.concatenate([rng.dirichlet(np.full(len(CLASSES), a), 400) for a in (0.1, 0.5, 2.0)])
    for point in (None, fitted, never):
        for flag in (False, True):
            batch = triage_mod.urgencies(probs, point, uncertain=np.full(len(probs), flag))
            for p, u in zip(probs, batch, strict=True):
                d = decide(p, point, uncertain=flag)
                assert d.uncertain is flag and d.urgency == u
                if flag:
                    assert d.urgency >= APPOINTMENT and "Usually harmless" not in d.next_step
            if flag:
                assert (batch >= APPOINTMENT).all()
    calm = decide(_probs(nv=0.95, bkl=0.05), None, uncertain=False)
    assert calm.urgency == WATCH and decide(_probs(nv=0.95, bkl=0.05), None, uncertain=True).urgency == APPOINTMENT
