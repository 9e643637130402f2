"""Post-hoc levers fitted nested: metadata encoding (missing values, dx_type refused), the balanced-accuracy bias,
and cross-fitting where no image (or image of its lesion) is in the data that scores it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import core.fusion as fusion
from core.errors import ConfigError
from core.metrics import balanced_accuracy


def test_metadata_features_encode_missing_values_explicitly() -> None:
    table = pd.DataFrame({"age": [45, None, 80], "sex": ["male", "unknown", ""],
                          "localization": ["back", "unknown", "Face"]})
    x = fusion.metadata_features(table)
    assert x.shape == (3, 2 + 3 + len(fusion.LOCALIZATIONS) + 1)
    assert x[0, :2].tolist() == [pytest.approx(0.45), 0.0] and x[1, :2].tolist() == [0.0, 1.0]
    sex = x[:, 2:5]
    assert sex.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    site = x[:, 5:]
    assert site[0, fusion.LOCALIZATIONS.index("back")] == 1 and site[2, fusion.LOCALIZATIONS.index("face")] == 1
    assert site[1, -1] == 1 and site.sum(axis=1).tolist() == [1, 1, 1]
    # a table without a column: every row missing for that field
    assert fusion.metadata_features(table.drop(columns="age"), ("age",))[:, 1].tolist() == [1, 1, 1]


@pytest.mark.parametrize("field", ["dx_type", "dx", "label"])
def test_label_leaking_fields_are_refused(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}.*leaks the label"):
        fusion.metadata_features(pd.DataFrame({field: ["histo"]}), (field,))
    with pytest.raises(ConfigError, match="unknown metadata field 'colour'; allowed: age, sex, localization"):
        fusion.check_fields(["colour"])


def test_bias_raises_balanced_accuracy_of_a_skewed_model() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 700)
    logits = rng.normal(size=(700, 7)) + 1.5 * np.eye(7)[labels]
    logits[:, 5] += 2.5  # the model over-calls class 5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    bias = fusion.fit_logit_bias(probs, labels)
    before = balanced_accuracy(labels, probs.argmax(1))
    after = balanced_accuracy(labels, (np.log(probs) + bias).argmax(1))
    assert after > before + 0.1 and bias[5] < 0


def test_cross_fit_never_scores_an_image_with_its_own_lesion(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    n = 300
    groups = np.repeat(np.arange(100), 3)
    labels = np.repeat(rng.integers(0, 7, 100), 3)
    probs = rng.dirichlet(np.ones(7), n)
    meta = rng.normal(size=(n, 4))
    fitted_on: list[set[int]] = []

    def spy_fit(p, m, y):
        fitted_on.append({int(g) for g in groups[np.isin(meta[:, 0], m[:, 0])]})
        return lambda p2, m2: np.full((len(p2), 7), 1 / 7)

    out = fusion.cross_fit(fusion.Lever("spy", spy_fit), probs, meta, labels, groups, k=5)
    assert out.shape == (n, 7) and len(fitted_on) == 5
    held = [set(range(100)) - s for s in fitted_on]
    assert sorted(g for h in held for g in h) == list(range(100))  # every lesion held out exactly once


def test_metadata_fusion_uses_an_informative_field() -> None:
    rng = np.random.default_rng(2)
    n = 1400
    labels = rng.integers(0, 7, n)
    probs = rng.dirichlet(np.ones(7), n)  # an uninformative image model
    table = pd.DataFrame({"age": np.where(labels < 4, 30, 75) + rng.normal(0, 3, n), "sex": "male",
                          "localization": np.array(fusion.LOCALIZATIONS)[labels]})
    meta = fusion.metadata_features(table)
    groups = np.arange(n)
    fused = fusion.cross_fit(fusion.LEVERS["metadata_fusion"], probs, meta, labels, groups)
    image_only = fusion.cross_fit(fusion.LEVERS["recalibrated"], probs, meta, labels, groups)
    assert balanced_accuracy(labels, fused.argmax(1)) > 0.9
    assert balanced_accuracy(labels, image_only.argmax(1)) < 0.3


@pytest.mark.parametrize("n_classes", [7, 2])
def test_the_fitted_stack_is_sklearns_model_in_numbers_and_survives_a_card(n_classes: int) -> None:
    """What a card carries (coefficients, intercepts, class names, fields) predicts what scikit-learn's fitted model
    predicts, to the float: the screened lever and the deployed fusion are one computation."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    n = 600
    labels = rng.integers(0, n_classes, n) * (1 if n_classes == 7 else 3)  # two classes: 0 and 3
    probs = rng.dirichlet(np.ones(7), n)
    table = pd.DataFrame({"age": rng.integers(20, 90, n).astype(float), "sex": rng.choice(["male", "female"], n),
                          "localization": rng.choice(fusion.LOCALIZATIONS, n)})
    table.loc[::7, "age"] = None
    meta = fusion.metadata_features(table)
    stack = fusion.fit_stack(probs, meta, labels, fields=fusion.METADATA_FIELDS)
    reference = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(stack.features(probs, meta),
                                                                                      labels)
    got = stack.predict(probs, meta)
    np.testing.assert_allclose(got[:, list(stack.classes)], reference.predict_proba(stack.features(probs, meta)),
                               atol=1e-9)
    assert np.all(np.delete(got, list(stack.classes), axis=1) == 0)  # classes it never saw get nothing
    again = fusion.LogisticStack.from_dict(json.loads(json.dumps(stack.to_dict())))
    np.testing.assert_array_equal(again.predict(probs, meta), got)
    with pytest.raises(ConfigError, match="dx_type.*leaks the label"):
        fusion.LogisticStack.from_dict({**stack.to_dict(), "fields": ["age", "dx_type"]})


def test_patient_metadata_takes_form_values_and_names_what_is_allowed() -> None:
    said = fusion.PatientMetadata.parse(age=" 45 ", sex="Female", localization="")
    assert said == fusion.PatientMetadata(age=45.0, sex="female") and said.given == ("age", "sex")
    assert fusion.PatientMetadata.parse().given == () and fusion.PatientMetadata().to_dict() == {}
    row = said.frame()
    assert list(row.columns) == list(fusion.METADATA_FIELDS) and row.loc[0, "age"] == 45.0
    for bad, message in (({"age": "old"}, "age must be a number"), ({"age": 130}, "from 0 to 120"),
                         ({"sex": "other"}, "allowed: male, female"), ({"localization": "elbow"}, "allowed: abdomen")):
        with pytest.raises(ConfigError, match=message):
            fusion.PatientMetadata.parse(**bad)


def test_a_card_carries_the_fusion_and_refuses_a_leaking_or_incomplete_one() -> None:
    """The fusion record reads back to the same numbers (same probabilities), and a card whose fusion uses
    ``dx_type`` or lacks a field is refused with a ModelError naming it."""
    from core.artifacts.card import Card
    from core.artifacts.records import Origin
    from core.data.transforms import Preprocessing
    from core.errors import ModelError
    from tests.site_model import site_fusion

    fused = site_fusion()
    card = Card(run_id="r", architecture="a", origin=Origin.untrained(), fusion=fused,
                preprocessing=Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    again = Card.from_dict(json.loads(json.dumps(card.to_dict())))
    probs = np.full((2, len(fusion.CLASSES)), 1 / len(fusion.CLASSES))
    table = pd.DataFrame({"age": [50, None], "sex": ["male", None], "localization": ["foot", "back"]})
    np.testing.assert_allclose(again.fusion.probabilities(probs, table), fused.probabilities(probs, table))
    assert again.fusion.probabilities(probs, table)[0].argmax() == fusion.CLASSES.index("mel")
    assert Card.from_dict({**card.to_dict(), "fusion": None}).fusion is None
    leaking = json.loads(json.dumps(card.to_dict()))
    leaking["fusion"]["stack"]["fields"] = ["age", "dx_type"]
    with pytest.raises(ModelError, match="leaks the label"):
        Card.from_dict(leaking)
    incomplete = json.loads(json.dumps(card.to_dict()))
    del incomplete["fusion"]["triage"]
    with pytest.raises(ModelError, match="a fusion record has the fields"):
        Card.from_dict(incomplete)


def test_an_app_following_the_app_card_fuses_exactly_as_the_server() -> None:
    """The app card's metadata_fusion section, read by plain code that knows only the JSON, gives the server's
    fused probabilities (missing fields included)."""
    from core.artifacts.card import Card
    from core.artifacts.mobile_pack import app_card
    from core.artifacts.records import Origin
    from core.data.transforms import Preprocessing
    from tests.site_model import site_fusion

    fused = site_fusion()
    card = Card(run_id="r", architecture="a", preprocessing=Preprocessing(input_size=32, mean=(0.5,) * 3,
                                                                          std=(0.5,) * 3), origin=Origin.untrained())
    assert app_card(card, [])["metadata_fusion"] is None
    app = json.loads(json.dumps(app_card(card, [], fusion=fused)))["metadata_fusion"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(fusion.CLASSES)), 3)
    people = [{"age": 70, "sex": "female", "localization": "foot"}, {"age": None, "sex": None, "localization": None},
              {"age": 30, "sex": None, "localization": "scalp"}]

    def one_hot(value, values):
        return [1.0 if value == v else 0.0 for v in values[:-1]] + [0.0 if value in values[:-1] else 1.0]

    def app_side(p, person):
        x = list(np.log(np.maximum(p, 1e-7)))
        x += [0.0, 1.0] if person["age"] is None else [person["age"] / 100, 0.0]
        x += one_hot(person["sex"], app["sex_values"]) + one_hot(person["localization"], app["localization_values"])
        z = np.asarray(app["coef"]) @ np.asarray(x) + np.asarray(app["intercept"])
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        z = np.log(np.maximum(q, 1e-7)) / app["temperature"]
        return np.exp(z - z.max()) / np.exp(z - z.max()).sum()

    expected = fused.probabilities(probs, pd.DataFrame(people))
    np.testing.assert_allclose([app_side(p, person) for p, person in zip(probs, people, strict=True)], expected,
                               atol=1e-9)


def test_fusion_variants_are_cross_fitted_and_paired_and_age_bins_catch_a_middle_age_class() -> None:
    """A class found only between 45 and 60 years: linear age cannot separate it from both sides, age bins can."""
    from core.jobs.fusion_variants import FusionVariant, screen_fusion_variants
    from core.jobs.screen import HeldOut

    rng = np.random.default_rng(3)
    n = 1200
    age = rng.uniform(5, 90, n)
    labels = np.where((age >= 45) & (age < 60), 1, 0)
    probs = rng.dirichlet(np.ones(7), n)  # an uninformative image model
    rows = pd.DataFrame({"image_id": [f"i{i:05d}" for i in range(n)], "lesion_id": [f"l{i // 2}" for i in range(n)],
                         "age": age, "sex": "female", "localization": "back"})
    held = HeldOut("cv-x", rows["image_id"].to_numpy(dtype=str), labels, probs, float("nan"))
    table = screen_fusion_variants(held, rows, variants=(FusionVariant("linear"),
                                                         FusionVariant("bins", extras=("age_bins",))))
    linear, bins = table.to_dict("records")
    assert linear["delta_balanced_accuracy"] == 0 and linear["delta_balanced_accuracy_ci"] == "[+0.000, +0.000]"
    assert bins["balanced_accuracy"] > 0.9 > linear["balanced_accuracy"] + 0.15
    assert bins["delta_balanced_accuracy"] > 0.15 and bins["images"] == n
    with pytest.raises(ConfigError, match="unknown fusion feature set.*allowed: age_bins"):
        FusionVariant("x", extras=("dx_type",))
    with pytest.raises(ConfigError, match="same order"):
        screen_fusion_variants(held, rows.iloc[::-1])
