"""Security regressions (issue 9), each against the production configuration unless it says otherwise.

The production site here is the real thing in process: ``LESIONLITE_ENV=production``, CSRF on, Secure
``__Host-`` cookies, an https external URL, a Redis limit store, a real SMTP server on localhost. The
rate-limit test runs gunicorn with two workers.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

import webapp.auth.routes as auth_routes
from core.errors import ConfigError
from tests.browser import free_port, wait_http
from tests.images import jpeg_bytes
from tests.webapp.conftest import PASSWORD, RELAXED_LIMITS, AuthActions, sent_mail
from tests.webapp.production import (
    REPO,
    SITE,
    Site,
    SiteClient,
    csrf,
    login,
    post,
    production_env,
    register_and_verify,
)
from webapp import create_app, mailer, users
from webapp.db import get_db
from webapp.extensions import limiter

# 1. Links in mail come from the configured external URL; other hosts are refused --------------------------------

def test_forged_host_never_reaches_a_mail(prod: Site) -> None:
    register_and_verify(prod)
    sent = len(prod.mails().messages)
    client = prod.client()
    token = csrf(client, "/auth/reset")
    for headers in ({"Host": "evil.example"}, {"Host": "lesionlite.example.org.evil.example"}):
        forged = client.post("/auth/reset", data={"email": "pat@example.org", "csrf_token": token}, headers=headers)
        assert forged.status_code == 400
    assert len(prod.mails().messages) == sent  # nothing was mailed
    # Through the proxy, a forwarded host is checked the same way.
    forwarded = client.post("/auth/reset", data={"email": "pat@example.org", "csrf_token": token},
                            headers={"X-Forwarded-Host": "evil.example"})
    assert forwarded.status_code == 400 and len(prod.mails().messages) == sent
    assert client.post("/auth/reset", data={"email": "pat@example.org", "csrf_token": token}).status_code == 302
    links = re.findall(r"https?://\S+", prod.mails().text())
    assert links and all(link.startswith(f"{SITE}/auth/reset/") for link in links)


def test_production_refuses_to_start_unsafely(tmp_path: Path, variant_folder: Path, redis_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base = production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url)
    cases = [
        ({"LESIONLITE_EXTERNAL_URL": None}, "LESIONLITE_EXTERNAL_URL is not set"),
        ({"LESIONLITE_EXTERNAL_URL": "http://lesionlite.example.org"}, "production links must use https"),
        ({"LESIONLITE_EXTERNAL_URL": "https://lesionlite.example.org/app"}, "must be scheme://host[:port]"),
        ({"RATELIMIT_STORAGE_URI": None}, "set RATELIMIT_STORAGE_URI=redis://"),
        ({"LESIONLITE_VARIANT": str(tmp_path / "nowhere"), "LESIONLITE_DB": str(tmp_path / "none.duckdb")},
         "no deployable model"),
    ]
    for change, message in cases:
        for key, value in {**base, **change}.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        with pytest.raises(ConfigError, match=re.escape(message)):
            create_app()
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "memory://")
    monkeypatch.setenv("LESIONLITE_SINGLE_WORKER", "1")  # declared single worker: per-process counters are right
    for key, value in base.items():
        if key != "RATELIMIT_STORAGE_URI":
            monkeypatch.setenv(key, value)
    assert create_app().config["TRUSTED_HOSTS"] == ["lesionlite.example.org"]


def test_production_refuses_a_model_without_its_photo_check(tmp_path: Path, variant_folder: Path, gated_variant,
                                                           redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Issue 32: a production site never starts without a photo check for its model, unless the operator's logged
    override says so; a model with its gate starts without any override."""
    base = production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url)
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LESIONLITE_ALLOW_NO_PHOTO_CHECK")
    with pytest.raises(ConfigError, match="has no photo check.*LESIONLITE_ALLOW_NO_PHOTO_CHECK=1"):
        create_app()
    monkeypatch.setenv("LESIONLITE_ALLOW_NO_PHOTO_CHECK", "1")
    with caplog.at_level(logging.WARNING, logger="webapp.predictor"):
        assert create_app().config["NO_PHOTO_CHECK"] is True
    assert "the operator's override" in caplog.text
    monkeypatch.delenv("LESIONLITE_ALLOW_NO_PHOTO_CHECK")
    monkeypatch.setenv("LESIONLITE_VARIANT", str(gated_variant[0]))
    assert create_app().config["NO_PHOTO_CHECK"] is False


# 2. Registration and reset take the same path whether or not the address is known ------------------------------

def test_registration_paths_do_the_same_work(prod: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    register_and_verify(prod)
    auth_routes._dummy_hash()  # made once per process, like the first unknown login or reset of a worker
    calls: list[str] = []
    real_hash, real_put = auth_routes.hash_password, mailer.outbox.put
    monkeypatch.setattr(auth_routes, "hash_password", lambda p: calls.append("hash") or real_hash(p))
    monkeypatch.setattr(mailer.outbox, "put", lambda item: calls.append("queue") or real_put(item))
    client = prod.client()
    for email in ("pat@example.org", "new@example.org"):  # known, then new
        calls.clear()
        response = post(client, "/auth/register", {"email": email, "password": PASSWORD, "consent": "y"})
        assert response.status_code == 302
        assert calls == ["hash", "queue"], email
    calls.clear()
    for email in ("pat@example.org", "nobody@example.org"):
        assert post(client, "/auth/reset", {"email": email}).status_code == 302
    # the mail is queued, never sent inside the request; the unknown address's twin is queued too (rendered, not
    # sent: the same work on both paths)
    assert calls == ["queue", "queue"]


def test_responses_do_not_wait_for_smtp(tmp_path: Path, variant_folder: Path, redis_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as tarpit:  # accepts connections and never answers: an SMTP server that hangs
        tarpit.bind(("127.0.0.1", 0))
        tarpit.listen(8)
        env = production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url, MAIL_SERVER="127.0.0.1",
                             MAIL_PORT=str(tarpit.getsockname()[1]))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = create_app()
        limiter.reset()  # after create_app: the limiter has its storage only once an app is made (order-independent)
        app.test_client_class = SiteClient
        client = app.test_client()
        token = csrf(client, "/auth/register")
        start = time.monotonic()
        response = client.post("/auth/register", data={"email": "slow@example.org", "password": PASSWORD,
                                                       "consent": "y", "csrf_token": token})
        assert response.status_code == 302 and time.monotonic() - start < 5  # SMTP would hang for good
    # the tarpit is closed: the background sender fails and closes its transport here, not in a later test
    assert mailer.outbox.join(60), "mail queue did not drain"


# 3. Rate limits: shared across workers, per client behind a proxy, per account without a lock-out -----------------

@pytest.mark.slow
def test_rate_limits_hold_across_two_gunicorn_workers(tmp_path: Path, variant_folder: Path, redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, **production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                          LESIONLITE_EXTERNAL_URL=f"https://127.0.0.1:{port}",
                                          LESIONLITE_RATELIMIT_LOGIN="10 per minute")}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                               "webapp:create_app()"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/auth/login", proc=server)
        codes = []
        for i in range(20):
            # A fresh session each time, like a client that drops cookies; the Secure cookie is carried by hand
            # because this test speaks plain HTTP to the workers.
            page = requests.get(f"{base}/auth/login", timeout=10)
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
            cookie = page.headers["Set-Cookie"].split(";")[0]
            response = requests.post(f"{base}/auth/login", data={"email": f"u{i}@example.org", "password": "x" * 12,
                                                                 "csrf_token": token},
                                     headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
            codes.append(response.status_code)
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes  # 10 per minute in all, not per worker
    finally:
        server.terminate()
        server.wait(timeout=30)


def _migrate_at(path: str, start: float) -> int:
    from webapp.db import migrate

    time.sleep(max(0.0, start - time.time()))  # all processes open the new file at the same moment
    return migrate(Path(path))


@pytest.mark.slow  # starts processes or trains
def test_workers_booting_together_migrate_one_new_database(tmp_path: Path) -> None:
    # gunicorn starts its workers at once; each creates the app and migrates the database. Without a lock one of
    # them could die with "database is locked" and the site fail to boot.
    import multiprocessing

    from webapp.db import MIGRATIONS

    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        path = str(tmp_path / f"r{round_}" / "lesionlite.sqlite")
        with ctx.Pool(4) as pool:
            start = time.time() + 2
            versions = pool.starmap(_migrate_at, [(path, start)] * 4)
        assert versions == [len(MIGRATIONS)] * 4


def test_per_account_throttle_cannot_lock_out_the_owner(prod: Site) -> None:
    register_and_verify(prod, "victim@example.org")
    attacker = prod.client()
    from_attacker = {"X-Forwarded-For": "203.0.113.5"}  # set by the trusted reverse proxy
    codes = [login(attacker, "victim@example.org", "wrong password 1", headers=from_attacker).status_code
             for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]  # backed off after 5 failures a minute
    owner = prod.client()
    assert login(owner, "victim@example.org", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 302


def test_clients_behind_the_proxy_have_their_own_budget(prod: Site) -> None:
    attacker = prod.client()
    for i in range(12):  # exhausts the attacker's own per-address login budget (10 a minute)
        login(attacker, f"guess{i}@example.org", "wrong password 1", headers={"X-Forwarded-For": "203.0.113.5"})
    assert login(attacker, "x@example.org", headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
    assert login(prod.client(), "x@example.org", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 401


# 4. API tokens die with the password ----------------------------------------------------------------------------

def _new_token(client: FlaskClient, password: str = PASSWORD) -> str:
    page = post(client, "/auth/profile/tokens", {"current_password": password}, form="/auth/profile")
    return re.search(r'id="new-token">([^<]+)<', page.data.decode()).group(1)


def _api(site: Site, token: str) -> int:
    return site.client().post("/api/v1/predict", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg")},
                              headers={"Authorization": f"Bearer {token}"}, content_type="multipart/form-data"
                              ).status_code


def test_api_tokens_die_with_password_change_and_reset(prod: Site) -> None:
    client = register_and_verify(prod)
    login(client)
    token = _new_token(client)
    assert _api(prod, token) == 200
    post(client, "/auth/profile/password", {"current_password": PASSWORD, "password": "another long passphrase"},
         form="/auth/profile")
    assert _api(prod, token) == 401
    token = _new_token(client, "another long passphrase")  # the attacker's, say; the owner recovers by a reset
    post(prod.client(), "/auth/reset", {"email": "pat@example.org"})
    link = re.search(r"https://\S+", prod.mails().text()).group(0).removeprefix(SITE)
    other = prod.client()
    assert post(other, link, {"password": "a brand new passphrase"}).status_code == 302
    assert _api(prod, token) == 401
    login(other, password="a brand new passphrase")
    assert b"changing or resetting your password revokes every token" in other.get("/auth/profile").data


# 5. A reset link proves only the address it was sent to ---------------------------------------------------------

def test_reset_link_is_bound_to_the_address_it_was_sent_to(prod: Site) -> None:
    client = register_and_verify(prod)
    post(prod.client(), "/auth/reset", {"email": "pat@example.org"})
    old_link = re.search(r"https://\S+", prod.mails().text()).group(0).removeprefix(SITE)
    login(client)
    post(client, "/auth/profile/email", {"email": "new-mine@example.org", "current_password": PASSWORD},
         form="/auth/profile")
    mails = prod.mails()
    assert mails.messages[-1]["To"] == "new-mine@example.org"
    client.get(re.search(r"https://\S+", mails.text()).group(0).removeprefix(SITE))  # confirmed from the new inbox
    reply = post(prod.client(), old_link, {"password": "a brand new passphrase"}, form="/auth/reset",
                 follow_redirects=True)
    assert b"invalid, expired or already used" in reply.data
    with prod.app.app_context():
        assert users.by_email("new-mine@example.org").verified and users.by_email("pat@example.org") is None


# 6. Uploads: the form is rate-limited like the API --------------------------------------------------------------

def test_upload_form_is_rate_limited(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    app.config["RATELIMIT_UPLOAD"] = "3 per minute"  # testing config: the production default is 30
    auth.register()
    auth.login()
    codes = [client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg")},
                         content_type="multipart/form-data").status_code for _ in range(4)]
    assert codes == [302, 302, 302, 429]


# 8. Bad input and races give the normal answers, never a 500 -----------------------------------------------------

def test_history_page_out_of_range_is_404(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    for page in ("9223372036854775807", "99999999999999999999999", "0", "-1", "2"):
        assert client.get(f"/check/history?page={page}").status_code == 404, page
    assert client.get("/check/history?page=1").status_code == 200
    assert client.get("/check/history?page=abc").status_code == 200  # not a number: the first page


def test_concurrent_registration_of_one_address_gets_the_normal_answer(app: Flask, client: FlaskClient,
                                                                        auth: AuthActions,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    auth.register()
    # The race: both requests looked the address up before either inserted it.
    monkeypatch.setattr(users, "by_email", lambda email: None)
    with sent_mail() as outbox:
        response = client.post("/auth/register", follow_redirects=True,
                               data={"email": "pat@example.org", "password": PASSWORD, "consent": "y"})
    assert response.status_code == 200 and b"If that address can be used" in response.data
    assert [m.recipients for m in outbox] == [["pat@example.org"]] and "tried to register" in outbox[0].subject


# 9. Cookies and caching -----------------------------------------------------------------------------------------

def test_cookies_are_host_bound_short_lived_and_pages_not_cached(prod: Site) -> None:
    client = register_and_verify(prod)
    response = post(client, "/auth/login", {"email": "pat@example.org", "password": PASSWORD, "remember": "y"},
                    form="/auth/login")
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    assert {"__Host-session", "__Host-remember"} <= set(cookies)
    for cookie in cookies.values():
        assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "Domain" not in cookie
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookies["__Host-remember"]).group(1))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    for path in ("/auth/profile", "/check/", "/check/history"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path


# 11. Decoder errors are fixed sentences ----------------------------------------------------------------------------

def test_header_only_jpeg_gets_a_fixed_message(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    auth.register()
    auth.login()
    response = client.post("/check/", data={"image": (io.BytesIO(b"\xff\xd8\xff\xe0" + b"\x00" * 16), "h.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and b"the image is damaged or truncated." in response.data
    assert not re.search(rb"0x[0-9a-f]{6,}|BytesIO", response.data)


# 12. Files, permissions, profile changes, development workers ------------------------------------------------------

def test_orphan_uploads_are_removed_and_files_are_owner_only(app: Flask, client: FlaskClient,
                                                            auth: AuthActions) -> None:
    auth.register()
    auth.login()
    assert client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg")},
                       content_type="multipart/form-data").status_code == 302
    uploads = Path(app.instance_path) / "uploads"
    (stored,) = uploads.iterdir()
    orphan = uploads / ("f" * 32 + ".jpg")
    orphan.write_bytes(b"left by a crash")
    (uploads / ("e" * 32 + ".part")).write_bytes(b"half written")
    restarted = create_app({**{k: app.config[k] for k in ("TESTING", "SECRET_KEY", "LESIONLITE_VARIANT")},
                            "INSTANCE_PATH": app.instance_path, **RELAXED_LIMITS})
    assert sorted(p.name for p in uploads.iterdir()) == [stored.name]  # the orphans went, the upload stayed
    assert (uploads.stat().st_mode & 0o777) == 0o700 and (stored.stat().st_mode & 0o777) == 0o600
    database = Path(restarted.instance_path) / "lesionlite.sqlite"
    assert (database.stat().st_mode & 0o777) == 0o600


def test_a_failed_row_leaves_no_file(app: Flask, client: FlaskClient, auth: AuthActions,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    auth.register()
    auth.login()
    import webapp.storage as storage

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "x.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 500
    assert list((Path(app.instance_path) / "uploads").iterdir()) == []
    with app.app_context():
        assert get_db().execute("SELECT count(*) FROM checks").fetchone()[0] == 0


def test_password_checked_profile_changes_are_rate_limited(prod: Site) -> None:
    client = register_and_verify(prod)
    login(client)
    codes = [post(client, "/auth/profile/delete", {"current_password": "wrong password 123"},
                  form="/auth/profile").status_code for _ in range(6)]
    assert codes[:5] == [400] * 5 and codes[5] == 429  # refused beside the form, then limited
    codes = [post(client, "/auth/profile/email", {"email": "x@example.org", "current_password": "wrong password 1"},
                  form="/auth/profile").status_code for _ in range(6)]
    assert codes[5] == 429


def test_development_workers_share_one_secret(tmp_path: Path, variant_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"LESIONLITE_ENV": "development", "LESIONLITE_INSTANCE": str(tmp_path / "dev"),
                       "LESIONLITE_VARIANT": str(variant_folder)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    first, second = create_app(), create_app()  # two workers (or a restart): the same key, so CSRF holds
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] and len(first.config["SECRET_KEY"]) == 64
    assert (os.stat(tmp_path / "dev" / "dev-secret-key").st_mode & 0o777) == 0o600


# 12. A check's pages (result, printable report, delete confirmation, image) are its owner's alone; deleting needs
#     the owner's CSRF token — in the production configuration ------------------------------------------------------

def test_check_pages_are_owner_only_and_delete_needs_csrf_in_production(prod: Site) -> None:
    owner = register_and_verify(prod)
    login(owner)
    response = owner.post("/check/", data={"image": (io.BytesIO(jpeg_bytes()), "a.jpg"), "body_site": "back",
                                            "note": "private note", "csrf_token": csrf(owner, "/check/")},
                          content_type="multipart/form-data")
    check = re.search(r"/check/result/([\w-]+)", response.headers["Location"]).group(1)
    pages = [f"/check/result/{check}", f"/check/report/{check}", f"/check/delete/{check}",
             f"/check/image/{check}"]
    for page in pages:
        with owner.get(page) as mine:
            assert mine.status_code == 200
    with owner.post(f"/check/spot/{check}", data={"spot": "no token"}) as forged:  # naming needs CSRF too
        assert forged.status_code == 400
    other = register_and_verify(prod, "mallory@example.org")
    login(other, "mallory@example.org")
    for page in pages:
        with other.get(page) as theirs:
            assert theirs.status_code == 404 and b"private note" not in theirs.data
    with other.post(f"/check/spot/{check}", data={"spot": "x", "csrf_token": csrf(other, "/check/")}) as theirs:
        assert theirs.status_code == 404
    assert owner.post(f"/check/delete/{check}").status_code == 400  # no CSRF token: refused
    assert owner.get(f"/check/result/{check}").status_code == 200
    assert post(owner, f"/check/delete/{check}", {}, form=f"/check/delete/{check}").status_code == 302
    assert owner.get(f"/check/result/{check}").status_code == 404
