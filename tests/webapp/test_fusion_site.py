"""Metadata late fusion where patients meet it: the upload form asks age and sex (optional, saying why) only when
the deployed model fuses them, the body site is mapped to HAM10000's vocabulary, the answer and its advice come
from the fusion's own calibration, and without metadata (or with a model that has no fusion) the answer is exactly
the image model's, and age and sex are not kept."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from core.fusion import PatientMetadata
from core.serve.deployed import DeployedModel
from tests.images import jpeg_bytes
from tests.site_model import fused_copy, site_fusion
from tests.webapp.conftest import PASSWORD, RELAXED_LIMITS, AuthActions
from webapp import create_app
from webapp.db import get_db


@pytest.fixture(scope="module")
def fused_folder(variant_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fused_copy(variant_folder, tmp_path_factory.mktemp("fused") / "dense-static")


def _site(tmp_path: Path, folder: Path) -> Flask:
    return create_app({"TESTING": True, "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
                       "INSTANCE_PATH": str(tmp_path / "instance"), "WTF_CSRF_ENABLED": False,
                       "LESIONLITE_VARIANT": str(folder), "MAIL_SUPPRESS_SEND": True, "MAIL_TO_LOG": False,
                       **RELAXED_LIMITS})


def _upload(client, **fields: object):
    return client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "lesion.jpg"), **fields},
                       content_type="multipart/form-data")


def test_without_metadata_the_answer_is_exactly_the_image_models(variant_folder: Path, fused_folder: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg_bytes()))
    plain, fused = DeployedModel.load(variant_folder), DeployedModel.load(fused_folder)
    reference = plain.classify(image)
    for answer in (fused.classify(image), fused.classify(image, metadata=PatientMetadata()),
                   plain.classify(image, metadata=PatientMetadata(age=50, localization="foot"))):
        np.testing.assert_array_equal(answer.prediction.probs, reference.prediction.probs)
        assert answer.decision == reference.decision and answer.metadata_used == ()
    foot = fused.classify(image, metadata=PatientMetadata(sex="female", localization="foot"))
    expected = site_fusion().probabilities(reference.prediction.probs[None], PatientMetadata(sex="female",
                                                                                             localization="foot"))[0]
    np.testing.assert_allclose(foot.prediction.probs, expected)
    assert foot.top == "mel" and foot.metadata_used == ("sex", "localization")
    # the fusion's own operating points decide (melanoma at >= 0.4: urgent), not the image model's
    assert foot.decision.refer_melanoma and foot.decision.uncertain == (foot.confidence < 0.3)


def test_the_site_asks_age_and_sex_only_when_the_model_uses_them_and_keeps_them_only_then(
        tmp_path: Path, variant_folder: Path, fused_folder: Path) -> None:
    app = _site(tmp_path / "fused", fused_folder)
    client = app.test_client()
    auth = AuthActions(app, client)
    auth.register()
    auth.login()
    form = client.get("/check/").data.decode()
    assert 'name="age"' in form and 'name="sex"' in form and "Why we ask" in form
    said = " ".join(form.split())
    assert "from 0.50 to 0.60" in said and "on 1234 HAM10000 images" in said  # the card's own figures
    refused = _upload(client, age="200")
    assert refused.status_code == 400 and "Enter an age from 0 to 120" in refused.data.decode()
    first = _upload(client, age="61", sex="male", body_site="foot")
    page = client.get(first.headers["Location"]).data.decode()
    assert "The answer used the photo with your age, your sex, the body site." in page
    second = _upload(client, body_site="other")  # "Elsewhere" is not a HAM10000 site: the photo alone
    assert "The answer used the photo alone." in client.get(second.headers["Location"]).data.decode()
    with app.app_context():
        rows = get_db().execute("SELECT age, sex, top_class, decision FROM checks ORDER BY rowid").fetchall()
    assert (rows[0]["age"], rows[0]["sex"], rows[0]["top_class"]) == (61, "male", "mel")
    assert json.loads(rows[0]["decision"])["metadata_used"] == ["age", "sex", "localization"]
    assert (rows[1]["age"], rows[1]["sex"]) == (None, "") and json.loads(rows[1]["decision"])["metadata_used"] == []
    # The API takes the same fields, says what it used, and names the allowed values of a bad one.
    created = client.post("/auth/profile/tokens", data={"current_password": PASSWORD})
    token = re.search(r'id="new-token">([^<]+)<', created.data.decode()).group(1)
    api = app.test_client()

    def predict(**fields: object):
        return api.post("/api/v1/predict", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg"), **fields},
                        headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data")

    body = predict(age="40", body_site="foot").json
    assert body["metadata_used"] == ["age", "localization"] and body["prediction"] == "mel"
    assert predict().json["metadata_used"] == []
    bad_sex, bad_site = predict(sex="x"), predict(body_site="elbow")
    assert bad_sex.status_code == 400 and "allowed: male, female" in bad_sex.json["error"]
    assert bad_site.status_code == 400 and "allowed: scalp, face" in bad_site.json["error"]

    plain = _site(tmp_path / "plain", variant_folder)  # a model without fusion: not asked, not kept
    client = plain.test_client()
    auth = AuthActions(plain, client)
    auth.register()
    auth.login()
    assert 'name="age"' not in client.get("/check/").data.decode()
    assert _upload(client, age="61", sex="male", body_site="foot").status_code == 302
    with plain.app_context():
        row = get_db().execute("SELECT age, sex, body_site FROM checks").fetchone()
    assert (row["age"], row["sex"], row["body_site"]) == (None, "", "foot")
