"""Accounts and their security properties."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.errors import ConfigError
from tests.webapp.conftest import PASSWORD, RELAXED_LIMITS, AuthActions, link_in, sent_mail
from webapp import create_app, users
from webapp.config import check, from_environment

GENERIC_LOGIN = b"Invalid email or password, or the address is not confirmed yet"
CHECK_MAIL = b"If that address can be used"


def test_production_refuses_to_start_without_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        check(from_environment("production"))
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="too short"):
        check(from_environment("production"))
    cfg = from_environment("production")
    assert cfg["SESSION_COOKIE_SECURE"] and cfg["SESSION_COOKIE_HTTPONLY"] and cfg["SESSION_COOKIE_SAMESITE"] == "Lax"
    with pytest.raises(ConfigError, match="allowed: production, development, testing"):
        from_environment("staging")


def test_register_verify_login(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    response, outbox = auth.register(verify=False)
    assert response.status_code == 302 and len(outbox) == 1
    assert "/auth/verify/" in outbox[0].body and outbox[0].html
    with sent_mail() as again:
        refused = auth.login()  # an unconfirmed account cannot sign in; it is sent its link again
    assert refused.status_code == 401 and b"not confirmed yet" in refused.data
    assert len(again) == 1 and "/auth/verify/" in again[0].body
    assert client.get("/check/").status_code == 302  # to the login page: nothing works before confirming
    client.get(link_in(outbox[0].body))
    auth.login()
    with app.app_context():
        assert users.by_email("pat@example.org").verified
    assert client.get("/check/").status_code == 200


@pytest.mark.parametrize(("password", "message"), [
    ("short", b"at least 12 characters"),
    ("x" * 129, b"Field cannot be longer than 128 characters"),
    ("password1234", b"too easy to guess"),
    ("aaaaaaaaaaaaaaaa", b"too easy to guess"),
    ("password123456", b"too easy to guess"),  # passed the old hand-written list
    ("qwerty1234567", b"too easy to guess"),
    ("iloveyou123456", b"too easy to guess"),
    ("a@example.org1234", b"too easy to guess"),  # the account's own address (strong without it)
])
def test_weak_passwords_are_refused(app: Flask, client: FlaskClient, password: str, message: bytes) -> None:
    response = client.post("/auth/register", data={"email": "a@example.org", "password": password, "consent": "y"})
    assert response.status_code == 200 and message in response.data
    with app.app_context():
        assert users.by_email("a@example.org") is None


def test_no_user_enumeration(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    # Register again with the same address: same answer as for a new one; the owner gets a note.
    with sent_mail() as outbox:
        again = client.post("/auth/register", data={"email": "pat@example.org", "password": PASSWORD, "consent": "y"},
                            follow_redirects=True)
        fresh = client.post("/auth/register", data={"email": "new@example.org", "password": PASSWORD, "consent": "y"},
                            follow_redirects=True)
    assert again.status_code == fresh.status_code == 200 and CHECK_MAIL in again.data and CHECK_MAIL in fresh.data
    assert [m.recipients for m in outbox] == [["pat@example.org"], ["new@example.org"]]
    # Login: unknown email and wrong password look the same.
    unknown = client.post("/auth/login", data={"email": "nobody@example.org", "password": PASSWORD})
    wrong = client.post("/auth/login", data={"email": "pat@example.org", "password": "wrong password 123"})
    assert unknown.status_code == wrong.status_code == 401
    assert GENERIC_LOGIN in unknown.data and GENERIC_LOGIN in wrong.data
    # Reset: same answer either way.
    a = client.post("/auth/reset", data={"email": "nobody@example.org"}, follow_redirects=True)
    b = client.post("/auth/reset", data={"email": "pat@example.org"}, follow_redirects=True)
    assert a.status_code == b.status_code == 200 and CHECK_MAIL in a.data and CHECK_MAIL in b.data


def test_csrf_missing_gives_400(tmp_path, variant_folder) -> None:
    app = create_app({"TESTING": True, "SECRET_KEY": "k" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_VARIANT": str(variant_folder), **RELAXED_LIMITS})
    client = app.test_client()
    response = client.post("/auth/login", data={"email": "a@example.org", "password": PASSWORD})
    assert response.status_code == 400 and b"reload the page" in response.data
    form = {"email": "a@example.org", "password": PASSWORD, "consent": "y"}
    assert client.post("/auth/register", data=form).status_code == 400


def test_login_is_rate_limited(app: Flask, client: FlaskClient) -> None:
    app.config["RATELIMIT_LOGIN"] = "10 per minute"
    codes = [client.post("/auth/login", data={"email": "x@example.org", "password": "wrong password 1"}).status_code
             for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[-1] == 429
    assert b"Too many attempts" in client.post("/auth/login", data={"email": "x@example.org",
                                                                     "password": "p" * 12}).data


def test_session_is_fresh_at_login(client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    with client.session_transaction() as s:
        s["planted"] = "by an attacker"
    auth.login()
    with client.session_transaction() as s:
        assert "planted" not in s


def test_logout_is_post_only_and_ends_other_sessions(app: Flask, auth: AuthActions) -> None:
    auth.register()
    other = app.test_client()
    AuthActions(app, other).login(remember=True)
    auth.login()
    assert other.get("/check/").status_code == 200
    assert auth.client.get("/auth/logout").status_code == 405
    auth.logout()
    assert other.get("/check/").status_code == 302  # the other session, remember-me included, is over


def test_password_change_ends_other_sessions(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    other = app.test_client()
    AuthActions(app, other).login()
    auth.login()
    r = client.post("/auth/profile/password", data={"current_password": "wrong one here",
                                                     "password": "another long passphrase"}, follow_redirects=True)
    assert b"not correct" in r.data and other.get("/check/").status_code == 200
    client.post("/auth/profile/password", data={"current_password": PASSWORD, "password": "another long passphrase"})
    assert client.get("/check/").status_code == 200  # this session stays
    assert other.get("/check/").status_code == 302


def test_verification_token_expiry_and_tampering(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    _, outbox = auth.register(verify=False)
    link = link_in(outbox[0].body)
    app.config["VERIFY_TOKEN_MAX_AGE"] = -1  # every token is now too old
    assert b"invalid or has expired" in client.get(link, follow_redirects=True).data
    app.config["VERIFY_TOKEN_MAX_AGE"] = 3600
    assert b"invalid or has expired" in client.get(link[:-3] + "abc", follow_redirects=True).data
    with app.app_context():
        assert not users.by_email("pat@example.org").verified
    client.get(link)
    with app.app_context():
        assert users.by_email("pat@example.org").verified


def test_reset_token_is_single_use(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    with sent_mail() as outbox:
        client.post("/auth/reset", data={"email": "pat@example.org"})
    link = link_in(outbox[0].body)
    r = client.post(link, data={"password": "a brand new passphrase"}, follow_redirects=True)
    assert b"Your password is changed" in r.data
    reuse = client.post(link, data={"password": "yet another passphrase"}, follow_redirects=True)
    assert b"already used" in reuse.data
    assert GENERIC_LOGIN not in auth.login(password="a brand new passphrase").data


def test_profile_name_and_an_email_change_confirmed_from_the_new_inbox(app: Flask, client: FlaskClient,
                                                                      auth: AuthActions) -> None:
    auth.register()
    auth.login()
    client.post("/auth/profile/name", data={"name": "Pat"})
    with sent_mail() as outbox:
        client.post("/auth/profile/email", data={"email": "pat2@example.org", "current_password": PASSWORD})
    with app.app_context():
        assert users.by_email("pat2@example.org") is None  # not moved before the new inbox confirms
        assert users.by_email("pat@example.org").name == "Pat"
    assert outbox[0].recipients == ["pat2@example.org"]
    client.get(link_in(outbox[0].body))
    with app.app_context():
        user = users.by_email("pat2@example.org")
        assert user.name == "Pat" and user.verified
    assert client.get("/check/").status_code == 302  # sessions of the old address ended
    assert b"already used" in client.get(link_in(outbox[0].body), follow_redirects=True).data


def test_security_headers_and_cookie_flags(client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    response = auth.login()
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_open_redirect_is_refused(client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    r = client.post("/auth/login?next=https://evil.example/phish", data={"email": "pat@example.org",
                                                                         "password": PASSWORD})
    assert r.headers["Location"].endswith("/check/")


def test_registration_asks_consent_with_a_privacy_notice_and_a_way_to_log_in(client: FlaskClient) -> None:
    """Issue 22 item 13: health images are kept only with the patient's agreement, said in plain words."""
    page = client.get("/auth/register").data.decode()
    assert "What we keep, and why" in page and "not used to train models" in page
    assert 'href="/auth/login"' in page and 'name="consent"' in page
    refused = client.post("/auth/register", data={"email": "a@example.org", "password": PASSWORD})
    assert b"Tick the box to agree" in refused.data and b"If that address can be used" not in refused.data
    assert b'aria-describedby="consent-error"' in refused.data  # the error is tied to its input


def test_the_profile_downloads_everything_kept_about_the_user(app, client: FlaskClient, auth: AuthActions) -> None:
    """Issue 22 item 13: the data export holds each check's record and photo."""
    import io
    import json
    import zipfile

    from tests.images import jpeg_bytes

    auth.register()
    auth.login()
    client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg"), "note": "left calf"},
                content_type="multipart/form-data")
    assert 'id="export"' in client.get("/auth/profile").data.decode()
    response = client.get("/auth/profile/export")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Cache-Control"] == "no-store"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    data = json.loads(archive.read("checks.json"))
    assert data["email"] == "pat@example.org" and len(data["checks"]) == 1
    check = data["checks"][0]
    assert check["note"] == "left calf" and check["decision"]["next_step"]
    # readable for a person (issue 32): class names in words, times with their zone, a README saying what is what
    assert check["diagnosis"] and all("(" in name for name in check["probabilities"])
    assert check["created_at"].endswith("+00:00") and "photo_checked" in check
    assert "checks.json" in archive.read("README.txt").decode()
    assert archive.read(check["photo"])[:2] == b"\xff\xd8"  # the photo itself
    auth.logout()
    assert client.get("/auth/profile/export").status_code in (302, 401)  # nobody else's


def test_create_user_command_makes_a_confirmed_account_with_a_working_token(app: Flask, client: FlaskClient) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "--email", "admin@example.org", "--password", PASSWORD,
                                 "--verified", "--api-token"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        user = users.by_email("admin@example.org")
        assert user is not None and user.verified
    answer = client.post("/api/v1/predict", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 400 and "multipart form field 'image'" in answer.get_json()["error"]  # signed in
    again = runner.invoke(args=["create-user", "--email", "admin@example.org", "--password", PASSWORD])
    assert again.exit_code != 0 and "already registered" in again.output
    weak = runner.invoke(args=["create-user", "--email", "b@example.org", "--password", "short"])
    assert weak.exit_code != 0


def test_a_refused_profile_form_says_so_beside_itself(client: FlaskClient, auth: AuthActions) -> None:
    import re

    auth.register()
    auth.login()
    for url, form_action, extra in (("/auth/profile/email", "/auth/profile/email", {"email": "n@example.org"}),
                                    ("/auth/profile/password", "/auth/profile/password", {"password": "x" * 20}),
                                    ("/auth/profile/delete", "/auth/profile/delete", {}),
                                    ("/auth/profile/tokens", "/auth/profile/tokens", {})):
        r = client.post(url, data={"current_password": "wrong password here", **extra})
        page = r.get_data(as_text=True)
        assert r.status_code == 400
        forms = re.findall(r'<form method="post" action="([^"]+)".*?</form>', page, flags=re.S)
        failing = re.search(rf'<form method="post" action="{form_action}".*?</form>', page, flags=re.S).group(0)
        assert 'role="alert"' in failing and "The current password is not correct." in failing
        assert page.count("The current password is not correct.") == 1 and len(forms) >= 4  # only that form
        assert 'aria-invalid="true"' in failing
    weak = client.post("/auth/profile/password", data={"current_password": PASSWORD, "password": "password1234"})
    assert weak.status_code == 400 and 'role="alert"' in weak.get_data(as_text=True)
