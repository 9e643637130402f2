"""One deployed-model service (core.serve.deployed) behind the site, its API and the dashboard's live panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.classes import CLASSES
from core.serve.deployed import DeployedModel
from core.serve.imaging import check_image
from tests.webapp.conftest import RELAXED_LIMITS


def test_classify_gates_then_predicts_with_the_cards_threshold_and_operating_points(
        gated_variant: tuple[Path, dict[str, float]], synthetic_root: Path) -> None:
    folder, _ = gated_variant
    model = DeployedModel.load(folder)
    assert model.gate is not None and model.uncertain_threshold == model.card.uncertain_threshold
    answers = [model.classify(check_image(p.read_bytes()).image) for p in sorted(synthetic_root.rglob("*.jpg"))[:8]]
    answer = next(a for a in answers if a.accepted)  # the tiny test gate turns away ~10% of its own images
    assert answer.top in CLASSES and sum(answer.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert answer.uncertain == (answer.confidence < model.uncertain_threshold)
    assert answer.decision is not None and answer.quality is not None
    refused = model.classify(Image.new("RGB", (300, 300), (128, 128, 128)))  # a blank picture: not a lesion photo
    assert not refused.accepted and refused.refusal_reason and refused.prediction is None
    with pytest.raises(AssertionError, match="no class"):
        _ = refused.top
    assert DeployedModel.load(folder, uncertain_threshold=0.99).uncertain_threshold == 0.99


def test_the_site_answers_what_the_service_answers(variant_folder: Path, samples_dir: Path, tmp_path: Path) -> None:
    from webapp import create_app
    from webapp.predictor import check_upload

    app = create_app({"TESTING": True, "SECRET_KEY": "s" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_VARIANT": str(variant_folder), "MAIL_SUPPRESS_SEND": True, **RELAXED_LIMITS})
    checked = check_image(sorted(samples_dir.glob("*.jpg"))[3].read_bytes())
    with app.app_context():
        site = check_upload(checked)
    service = DeployedModel.load(variant_folder).classify(checked.image)
    assert site.top_class == service.top and site.uncertain == service.uncertain
    assert np.allclose(list(site.probs.values()), list(service.probs.values()), atol=1e-6)
    assert site.decision == service.decision and site.quality == service.quality


def test_scores_say_what_a_user_would_see_uncertain_and_the_accuracy_of_the_rest() -> None:
    from core.serve.deployed import Scores

    # classes in CLASSES order: mel, nv, bcc, ...; two melanomas, one confidently called a naevus
    probs = np.zeros((4, 7))
    probs[:3, :2] = [[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]]
    probs[3, [0, 1, 4]] = [0.1, 0.55, 0.35]  # melanoma below the advice floor, naevus top at 55%
    labels = np.array([0, 1, 1, 0])
    scores = Scores(probs, labels, probs.max(axis=1) < 0.7)
    assert scores.deployment_metrics(None) == {"uncertain_share": 0.5, "accuracy_confident": 1.0,
                                               # the naevus-leaning melanoma is uncertain: an appointment, not "watch"
                                               "advice_mel_watch_share": 0.0, "advice_malignant_watch_share": 0.0}
    confident = Scores(probs, labels, np.zeros(4, dtype=bool)).deployment_metrics(None)
    assert confident["advice_mel_watch_share"] == 0.5  # the same melanoma, shown as confident: told "watch"
    everything_uncertain = Scores(probs, labels, np.ones(4, dtype=bool)).deployment_metrics(None)
    assert everything_uncertain["uncertain_share"] == 1.0 and np.isnan(everything_uncertain["accuracy_confident"])


def test_one_resize_serves_gate_and_model_with_the_same_answer(
        gated_variant: tuple[Path, dict[str, float]], samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import core.serve.deployed as deployed
    import core.serve.ood as ood
    from core.serve.predict import predict_image

    folder, _ = gated_variant
    model = DeployedModel.load(folder)
    image = check_image(sorted(samples_dir.glob("*.jpg"))[0].read_bytes()).image
    calls = []
    for module in (deployed, ood):
        original = module.image_array
        monkeypatch.setattr(module, "image_array", lambda im, prep, f=original: calls.append(prep) or f(im, prep))
    # the test gate's backbone takes 96 px, the tiny model 32: each resizes for itself
    assert model.gate is not None and model.gate.prep != model.predictor.preprocessing
    model.classify(image)
    assert len(calls) == 2
    # a gate at the model's own preprocessing (the default of scripts.fit_ood_gate): one resize for both; its
    # backbone stands in by returning a class mean (distance 0: accepted) after checking what it was given
    seen = []
    model.gate = dataclasses.replace(model.gate, prep=model.predictor.preprocessing,
                                     embedder=lambda x: seen.append(x) or model.gate.means[:1])
    calls.clear()
    answer = model.classify(image)
    assert len(calls) == 1 and answer.accepted
    assert np.array_equal(seen[0][0], deployed.image_array(image, model.predictor.preprocessing))
    assert np.allclose(answer.prediction.probs, predict_image(model.predictor, image, name="x").probs, atol=1e-6)
    assert set(answer.stage_ms) == {"preprocess", "gate", "model", "quality"}
    assert all(ms >= 0 for ms in answer.stage_ms.values())
