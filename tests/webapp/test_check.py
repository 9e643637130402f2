"""CheckResult, history, ownership, the bad-upload corpus and the JSON API."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.images import jpeg_bytes, png_bytes
from tests.webapp.conftest import PASSWORD, AuthActions
from webapp.db import get_db


def _upload(client: FlaskClient, data: bytes, name: str = "lesion.jpg", field: str = "image"):
    return client.post("/check/", data={field: (io.BytesIO(data), name)}, content_type="multipart/form-data")


def _check_id(response) -> str:
    return re.search(r"/check/result/([\w-]+)", response.headers["Location"]).group(1)


def test_upload_real_sample_result_history_delete(app: Flask, client: FlaskClient, auth: AuthActions,
                                                  samples_dir: Path) -> None:
    auth.register()
    auth.login()
    sample = sorted(samples_dir.glob("*.jpg"))[0]
    response = _upload(client, sample.read_bytes())
    assert response.status_code == 302
    check = _check_id(response)
    page = client.get(f"/check/result/{check}").data.decode()
    assert "not a diagnosis" in page and "Model: a tiny test network, 8-bit, version 20" in page
    assert "model: a tiny test network, 8-bit, version 20" in page  # the check's own, in plain words
    assert any(name in page for name in ("Melanoma", "Melanocytic nevus", "Basal cell carcinoma", "Dermatofibroma",
                                         "Vascular lesion", "Benign keratosis-like lesion", "Actinic keratosis"))
    with client.get(f"/check/image/{check}") as image:
        assert image.status_code == 200 and image.mimetype == "image/jpeg"
        assert Image.open(io.BytesIO(image.data)).getexif() == {}  # re-encoded, metadata stripped
    assert check in client.get("/check/history").data.decode()
    with app.app_context():
        key = get_db().execute("SELECT image_key FROM checks").fetchone()["image_key"]
    stored = Path(app.instance_path) / "uploads" / f"{key}.jpg"
    assert stored.is_file() and "static" not in str(stored)
    assert client.post(f"/check/delete/{check}").status_code == 302
    assert not stored.exists() and client.get(f"/check/result/{check}").status_code == 404


def test_uncertain_state(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    app.config["DEPLOYED_UNCERTAIN_THRESHOLD"] = 1.01  # as LESIONLITE_UNCERTAIN_THRESHOLD=1.01 sets it at start-up
    auth.register()
    auth.login()
    response = _upload(client, jpeg_bytes())
    assert b"Uncertain" in client.get(response.headers["Location"]).data


def test_other_users_get_404(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    check = _check_id(_upload(client, jpeg_bytes()))
    mallory = app.test_client()
    mal = AuthActions(app, mallory)
    mal.register("mallory@example.org")
    mal.login("mallory@example.org")
    for url in (f"/check/result/{check}", f"/check/image/{check}"):
        with mallory.get(url) as response:
            assert response.status_code == 404
    assert mallory.post(f"/check/delete/{check}").status_code == 404
    assert client.get(f"/check/result/{check}").status_code == 200


def test_history_is_paginated(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    app.config["HISTORY_PAGE_SIZE"] = 2
    auth.register()
    auth.login()
    for _ in range(3):
        _upload(client, jpeg_bytes())
    assert b"Page 1 of 2" in client.get("/check/history").data
    assert b"Page 2 of 2" in client.get("/check/history?page=2").data


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(("name", "data", "message"), [
    ("empty.jpg", b"", b"the file is empty"),
    ("text.jpg", b"plain text pretending to be a photo", b"not a JPEG or PNG"),
    ("truncated.jpg", jpeg_bytes()[:500], b"damaged or truncated"),
    ("bomb.png", png_bytes((12000, 12000)), b"too large"),
    ("script.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", b"not a JPEG or PNG"),
    ("anim.gif", _gif(), b"not a JPEG or PNG"),
])
def test_bad_upload_corpus(client: FlaskClient, auth: AuthActions, name: str, data: bytes, message: bytes) -> None:
    auth.register()
    auth.login()
    response = _upload(client, data, name=name)
    assert 400 <= response.status_code < 500 and message in response.data, response.data[:300]
    assert _upload(client, jpeg_bytes()).status_code == 302  # and the app keeps serving


def test_wrong_field_and_oversized_upload(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    wrong = _upload(client, jpeg_bytes(), field="file")
    assert wrong.status_code == 400 and b"form field" in wrong.data
    # A raw 20 MB multipart body (the test client would spool an encoded one to a file it never closes).
    body = b"--b\r\nContent-Disposition: form-data; name=image; filename=big.jpg\r\n\r\n\xff\xd8\xff"
    huge = client.post("/check/", data=body + b"\x00" * (20 * 1024 * 1024) + b"\r\n--b--\r\n",
                       content_type="multipart/form-data; boundary=b")
    assert huge.status_code == 413 and b"too large" in huge.data
    assert _upload(client, jpeg_bytes()).status_code == 302


def test_api_token_lifecycle(app: Flask, client: FlaskClient, auth: AuthActions, samples_dir: Path) -> None:
    auth.register()
    auth.login()
    created = client.post("/auth/profile/tokens", data={"current_password": PASSWORD})
    token = re.search(r'id="new-token">([^<]+)<', created.data.decode()).group(1)  # shown once, in the response
    assert created.headers["Cache-Control"] == "no-store"
    assert token not in client.get("/auth/profile").data.decode()
    with client.session_transaction() as cookie_session:
        assert token not in str(dict(cookie_session))  # never in the (signed, readable) session cookie
    api = app.test_client()  # a mobile client: no cookies
    sample = sorted(samples_dir.glob("*.jpg"))[3].read_bytes()

    def call(tok: str | None, data: bytes = sample, field: str = "image"):
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return api.post("/api/v1/predict", data={field: (io.BytesIO(data), "x.jpg")}, headers=headers,
                        content_type="multipart/form-data")

    ok = call(token)
    assert ok.status_code == 200, ok.json
    body = ok.json
    assert body["prediction"] in ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4 and "not a diagnosis" in body["disclaimer"]
    assert call(None).status_code == 401 and call("ll_forged").status_code == 401
    assert call(token, b"not an image").status_code == 400 and "not a JPEG" in call(token, b"nope").json["error"]
    assert call(token, field="file").status_code == 400
    with app.app_context():
        token_id = get_db().execute("SELECT id FROM api_tokens").fetchone()["id"]
    client.post(f"/auth/profile/tokens/{token_id}/revoke")
    assert call(token).status_code == 401


def test_delete_account_removes_everything(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    _upload(client, jpeg_bytes())
    uploads = Path(app.instance_path) / "uploads"
    assert len(list(uploads.iterdir())) == 1
    r = client.post("/auth/profile/delete", data={"current_password": "not my password"}, follow_redirects=True)
    assert b"not correct" in r.data
    client.post("/auth/profile/delete", data={"current_password": PASSWORD})
    assert list(uploads.iterdir()) == []
    with app.app_context():
        db = get_db()
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM checks").fetchone()[0] == 0
    assert client.get("/check/").status_code == 302


def test_default_model_is_chosen_at_start_up_and_survives_a_store_writer(tmp_path: Path, sweep_store: Path) -> None:
    from core.store.choosing import deployed_variant
    from core.store.results import ResultsStore
    from tests.webapp.conftest import RELAXED_LIMITS
    from webapp import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "d" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_DB": str(sweep_store), "WTF_CSRF_ENABLED": False, "MAIL_SUPPRESS_SEND": True,
                      **RELAXED_LIMITS})
    with ResultsStore(sweep_store, read_only=True) as store:
        assert app.config["DEPLOYED_VARIANT"] == deployed_variant(store).resolve()
    client = app.test_client()
    auth = AuthActions(app, client)
    auth.register()
    auth.login()
    # A sweep or pipeline holding the store's write lock must not break the site: it never opens the store again.
    with ResultsStore(sweep_store):
        assert _upload(client, jpeg_bytes()).status_code == 302


def test_no_model_answers_503_with_a_clear_message(tmp_path: Path) -> None:
    from tests.webapp.conftest import RELAXED_LIMITS
    from webapp import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "d" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_DB": str(tmp_path / "absent.duckdb"), "WTF_CSRF_ENABLED": False,
                      "MAIL_SUPPRESS_SEND": True, **RELAXED_LIMITS})
    client = app.test_client()
    auth = AuthActions(app, client)
    auth.register()
    auth.login()
    assert b"No model is loaded: checks will not work." in client.get("/check/").data  # said before an upload
    response = _upload(client, jpeg_bytes())
    assert response.status_code == 503 and b"The model is not available right now" in response.data
    with app.app_context():
        assert get_db().execute("SELECT count(*) FROM checks").fetchone()[0] == 0
    assert list((Path(app.instance_path) / "uploads").iterdir()) == []


def test_uncertain_threshold_is_the_deployed_cards_unless_configured(tmp_path: Path, variant_folder: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import shutil

    from core.artifacts.card import read_variant_card
    from core.errors import ConfigError
    from tests.webapp.conftest import RELAXED_LIMITS
    from webapp import create_app

    def make(folder: Path) -> Flask:
        return create_app({"TESTING": True, "SECRET_KEY": "d" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                           "LESIONLITE_VARIANT": str(folder), "MAIL_SUPPRESS_SEND": True, **RELAXED_LIMITS})

    monkeypatch.delenv("LESIONLITE_UNCERTAIN_THRESHOLD", raising=False)
    card = read_variant_card(variant_folder)
    assert card.uncertain_threshold is not None  # chosen on validation by the sweep
    assert make(variant_folder).config["DEPLOYED_UNCERTAIN_THRESHOLD"] == card.uncertain_threshold
    monkeypatch.setenv("LESIONLITE_UNCERTAIN_THRESHOLD", "0.42")
    assert make(variant_folder).config["DEPLOYED_UNCERTAIN_THRESHOLD"] == 0.42
    monkeypatch.setenv("LESIONLITE_UNCERTAIN_THRESHOLD", "high")
    with pytest.raises(ConfigError, match="LESIONLITE_UNCERTAIN_THRESHOLD='high' is not a number"):
        make(variant_folder)
    monkeypatch.delenv("LESIONLITE_UNCERTAIN_THRESHOLD")
    uncalibrated = tmp_path / "uncalibrated"  # a card with no threshold: refused at start-up, not guessed
    shutil.copytree(variant_folder, uncalibrated)
    raw = json.loads((uncalibrated / "card.json").read_text())
    raw["calibration"]["uncertain_threshold"] = None
    (uncalibrated / "card.json").write_text(json.dumps(raw))
    refused = make(uncalibrated)  # outside production the site starts and says why predictions answer 503
    assert refused.config["DEPLOYED_VARIANT"] is None
    assert "no calibrated 'uncertain' threshold" in refused.config["MODEL_PROBLEM"]
    monkeypatch.setenv("LESIONLITE_UNCERTAIN_THRESHOLD", "0.5")  # unless the operator sets one
    assert make(uncalibrated).config["DEPLOYED_UNCERTAIN_THRESHOLD"] == 0.5


def test_pages_say_what_the_model_card_says(client: FlaskClient, auth: AuthActions, variant_folder: Path) -> None:
    import json

    card = json.loads((variant_folder / "card.json").read_text())
    assert card["origin"]["training_data"]["synthetic"] is True and "recall_mel" in card["metrics"]["test"]
    auth.register()
    auth.login()
    page = client.get("/check/").data.decode()
    assert 'id="demo-model"' in page and "trained on synthetic" in page  # never "trained on HAM10000"
    assert "trained on synthetic demo images" in page and "HAM10000: CC BY-NC" not in page
    assert f"balanced accuracy {card['metrics']['test']['balanced_accuracy'] * 100:.0f}%" in page
    assert f"melanomas found {card['metrics']['test']['recall_mel'] * 100:.0f}%" in page
    # issue 22 item 14: a plain model name and version for patients; the technical id only as a tooltip
    assert "Model: a tiny test network, 8-bit, version " + card["run_id"][:4] in page
    assert f'title="test_efficientnet dense-static · {card["run_id"]}"' in page


def test_body_site_note_timeline_and_report(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    ids = []
    for note, spot in (("first look", "mole left shoulder"), ("another mole", "mole near spine"),
                       ("it changed", "  mole  left shoulder ")):
        response = client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "a.jpg"), "body_site": "back",
                                                 "note": note, "spot": spot}, content_type="multipart/form-data")
        ids.append(_check_id(response))
    page = client.get(f"/check/result/{ids[2]}").data.decode()
    assert "it changed" in page and "“mole left shoulder” over time, side by side" in page
    assert f"/check/image/{ids[0]}" in page and f"/check/result/{ids[0]}" in page  # the same spot's photo
    assert f"/check/image/{ids[1]}" not in page  # another mole on the back is not this lesion
    upload_page = client.get("/check/").data.decode()  # the names given so far, offered for the next photo
    assert '<option value="mole left shoulder">' in upload_page and '<option value="mole near spine">' in upload_page
    assert "ABCDE" in page and "See a doctor now" in page
    report = client.get(f"/check/report/{ids[2]}").data.decode()
    assert "LesionLite skin check report" in report and "it changed" in report and "Back" in report
    assert "<th scope=\"row\">Spot</th><td>mole left shoulder</td>" in report
    assert "trained on" in report and "not a diagnosis" in report
    bad = client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "a.jpg"), "body_site": "moon"},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and b"Not a valid choice" in bad.data
    mallory = app.test_client()
    mal = AuthActions(app, mallory)
    mal.register("mallory@example.org")
    mal.login("mallory@example.org")
    assert mallory.get(f"/check/report/{ids[0]}").status_code == 404
    assert mallory.get(f"/check/delete/{ids[0]}").status_code == 404


def test_delete_asks_before_it_deletes(client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    check = _check_id(_upload(client, jpeg_bytes()))
    history = client.get("/check/history").data.decode()
    main = history.split('<main id="main" tabindex="-1">')[1]
    assert f'href="/check/delete/{check}"' in history and "<form" not in main
    ask = client.get(f"/check/delete/{check}").data.decode()
    assert "Delete this check?" in ask and "cannot be undone" in ask
    assert client.get(f"/check/result/{check}").status_code == 200  # asking deleted nothing
    assert client.post(f"/check/delete/{check}").status_code == 302
    assert client.get(f"/check/result/{check}").status_code == 404


def test_forms_help_password_managers_and_phones(client: FlaskClient, auth: AuthActions) -> None:
    login = client.get("/auth/login").data.decode()
    assert 'autocomplete="email"' in login and 'autocomplete="current-password"' in login
    assert 'rel="icon"' in login
    with client.get("/static/favicon.svg") as icon:
        assert icon.status_code == 200
    assert 'autocomplete="new-password"' in client.get("/auth/register").data.decode()
    auth.register()
    auth.login()
    upload = client.get("/check/").data.decode()
    assert 'accept="image/jpeg,image/png,image/*"' in upload and "up to 10 MB" in upload


def test_web_workers_use_one_blas_thread(app: Flask) -> None:
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)  # workers share cores: no spinning BLAS pools


def test_the_operating_point_frames_the_result_page_and_the_api(tmp_path: Path, variant_folder: Path,
                                                                samples_dir: Path) -> None:
    """Issue 20: the deployed card's operating point decides "possibly malignant" and the next step (not the top
    class alone), the API returns the group probability, the decision and the operating point, and a check keeps
    the advice it was given when the card changes later."""
    import shutil

    from core.artifacts.card import read_variant_card, write_variant
    from core.triage import MALIGNANT_GROUP, MELANOMA_GROUP, OperatingPoint, Triage
    from tests.webapp.conftest import RELAXED_LIMITS
    from webapp import create_app

    folder = tmp_path / "variant"
    shutil.copytree(variant_folder, folder)
    card = read_variant_card(folder)
    card.triage = Triage(OperatingPoint(MALIGNANT_GROUP, 0.0, 0.9, 1.0, 0.0, 10),  # refers every image
                         OperatingPoint(MELANOMA_GROUP, 1.5, 0.85, 0.0, 1.0, 5))  # refers none
    write_variant(folder, model_file=str(card.file), card=card)
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
                      "INSTANCE_PATH": str(tmp_path / "instance"), "WTF_CSRF_ENABLED": False,
                      "LESIONLITE_VARIANT": str(folder), "MAIL_SUPPRESS_SEND": True, "MAIL_TO_LOG": False,
                      "UNCERTAIN_THRESHOLD": 0.0, **RELAXED_LIMITS})
    client = app.test_client()
    auth = AuthActions(app, client)
    auth.register()
    auth.login()
    sample = sorted(samples_dir.glob("*.jpg"))[0].read_bytes()
    response = _upload(client, sample)
    page = client.get(response.headers["Location"]).data.decode()
    assert 'class="verdict malignant"' in page and "Possibly malignant" in page
    assert "within the next few weeks" in page or "within two weeks" in page
    with app.app_context():
        stored = get_db().execute("SELECT decision FROM checks").fetchone()["decision"]
    assert '"refer": true' in stored and '"threshold": 0.0' in stored
    # The API answers with the screening decision and the operating point behind it.
    created = client.post("/auth/profile/tokens", data={"current_password": PASSWORD})
    token = re.search(r'id="new-token">([^<]+)<', created.data.decode()).group(1)
    body = app.test_client().post("/api/v1/predict", data={"image": (io.BytesIO(sample), "x.jpg")},
                                  headers={"Authorization": f"Bearer {token}"},
                                  content_type="multipart/form-data").json
    screening = body["screening"]
    assert screening["refer"] is True and screening["refer_melanoma"] is False
    assert screening["operating_point"]["malignant"]["threshold"] == 0.0
    assert screening["possibly_malignant_probability"] == pytest.approx(
        sum(body["probabilities"][c] for c in MALIGNANT_GROUP))


def test_a_blurred_photo_gets_retake_advice_and_a_sharp_one_none(app: Flask, client: FlaskClient, auth: AuthActions,
                                                                  samples_dir: Path) -> None:
    """Issue 22 item 15: photo-quality feedback with the result (advice, never a refusal), kept with the check,
    in the data export and the API."""
    from PIL import ImageFilter

    auth.register()
    auth.login()
    sample = sorted(samples_dir.glob("*.jpg"))[0]
    sharp = client.get(_upload(client, sample.read_bytes()).headers["Location"]).data.decode()
    assert "Photo check" not in sharp
    buf = io.BytesIO()
    Image.open(sample).filter(ImageFilter.GaussianBlur(8)).save(buf, format="JPEG", quality=92)
    response = _upload(client, buf.getvalue())
    assert response.status_code == 302  # still checked: the advice is to retake, not a refusal
    page = client.get(response.headers["Location"]).data.decode()
    assert "Photo check" in page and "The photo looks blurred" in page and "Take and upload a new photo" in page
    with app.app_context():
        stored = [r["quality"] for r in get_db().execute("SELECT quality FROM checks ORDER BY rowid")]
    assert '"issues": []' in stored[0] and '"issues": ["blur"]' in stored[1]
    created = client.post("/auth/profile/tokens", data={"current_password": PASSWORD})
    token = re.search(r'id="new-token">([^<]+)<', created.data.decode()).group(1)
    body = app.test_client().post("/api/v1/predict", data={"image": (io.BytesIO(buf.getvalue()), "x.jpg")},
                                  headers={"Authorization": f"Bearer {token}"},
                                  content_type="multipart/form-data").json
    assert body["photo_quality"]["issues"] == ["blur"] and "blurred" in body["photo_quality"]["advice"][0]


def test_history_items_show_and_are_coloured_by_their_stored_next_step(app: Flask, client: FlaskClient,
                                                                       auth: AuthActions) -> None:
    """Issue 32: colour follows the advice given (an uncertain check is never green), whatever the top class."""
    import json

    app.config["DEPLOYED_UNCERTAIN_THRESHOLD"] = 1.01  # every result shown as uncertain
    auth.register()
    auth.login()
    check = _check_id(_upload(client, jpeg_bytes()))
    page = client.get("/check/history").get_data(as_text=True)
    item = re.search(r'<li class="(\w+)">.*?Next step: ([^<]+)<', page, re.S)
    assert item and item.group(1) in {"appointment", "urgent"}
    result = client.get(f"/check/result/{check}").get_data(as_text=True)
    assert "Uncertain" in result and "Usually harmless" not in result
    with app.app_context():  # the same check stored as calm advice: the item turns green and says so
        db = get_db()
        decision = json.loads(db.execute("SELECT decision FROM checks").fetchone()[0])
        db.execute("UPDATE checks SET decision = ?, uncertain = 0",
                   (json.dumps({**decision, "urgency": 0, "uncertain": False}),))
        db.commit()
    page = client.get("/check/history").get_data(as_text=True)
    assert '<li class="watch">' in page and "Next step: watch for changes" in page
    # the tiny test variant has no photo check: the result, its history item and its report say so themselves
    assert "no photo check" in page
    assert 'id="result-no-photo-check"' in result
    assert 'id="result-no-photo-check"' in client.get(f"/check/report/{check}").get_data(as_text=True)


def test_a_check_is_named_as_a_spot_afterwards_by_its_owner_only(app: Flask, client: FlaskClient,
                                                                auth: AuthActions) -> None:
    auth.register()
    auth.login()
    first, second = (_check_id(_upload(client, jpeg_bytes())) for _ in range(2))
    assert "Follow this spot over time" in client.get(f"/check/result/{second}").data.decode()
    for check in (first, second):
        answer = client.post(f"/check/spot/{check}", data={"spot": "freckle on arm"})
        assert answer.status_code == 302 and answer.headers["Location"].endswith(f"/check/result/{check}")
    page = client.get(f"/check/result/{second}").data.decode()
    assert "“freckle on arm” over time, side by side" in page and f"/check/image/{first}" in page
    too_long = client.post(f"/check/spot/{first}", data={"spot": "x" * 61}, follow_redirects=True).data.decode()
    assert "was not saved" in too_long
    mallory = app.test_client()
    mal = AuthActions(app, mallory)
    mal.register("mallory@example.org")
    mal.login("mallory@example.org")
    assert mallory.post(f"/check/spot/{first}", data={"spot": "mine now"}).status_code == 404
    assert "freckle on arm" not in mallory.get("/check/").data.decode()  # names are the owner's alone
    with app.app_context():
        from webapp import checks
        assert checks.owned(1, first)["spot"] == "freckle on arm"


def test_the_old_detect_addresses_lead_to_the_check_pages(client: FlaskClient) -> None:
    """The pages were at /detect/ before a check was called a check everywhere: old bookmarks move permanently,
    on this site only, and nothing in the old address can add a header."""
    assert client.get("/detect/").headers["Location"] == "/check/"
    moved = client.get("/detect/history?page=2")
    assert moved.status_code == 301 and moved.headers["Location"] == "/check/history?page=2"
    hops = client.get("/detect//evil.example/x", follow_redirects=True).history  # never off the site
    assert hops and all(urlsplit(h.headers["Location"]).netloc in ("", "localhost") for h in hops)
    injected = client.get("/detect/%0d%0aSet-Cookie:%20x=1")  # a line break is no page name: not found
    assert injected.status_code == 404 and "Set-Cookie" not in injected.headers
