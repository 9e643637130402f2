"""Security regressions of the third pass (issue 21), item by item, against the production configuration where the
property depends on it (the fixtures of ``test_security``: gunicorn or the app in process with
``LESIONLITE_ENV=production``, Redis limits, one trusted proxy, SMTP on localhost)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import webapp.auth.routes as auth_routes
from tests.browser import free_port, wait_http
from tests.images import jpeg_bytes
from tests.webapp.conftest import PASSWORD
from tests.webapp.production import (
    REPO,
    SITE,
    Site,
    login,
    post,
    production_env,
    register_and_verify,
)
from tests.webapp.smtp import smtp_server
from webapp import create_app, mailer, users

LOCK_HOLDER = """
import sys, time
from core.store.results import ResultsStore
store = ResultsStore(sys.argv[1])   # a sweep's writer: holds the store's file lock
print("locked", flush=True)
time.sleep(120)
"""


def _workers(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


# 3. A worker restarted while a sweep holds the store boots from the choice made at start-up ----------------------

def test_a_worker_restarted_while_a_sweep_holds_the_store_still_boots(tmp_path: Path, variant_folder: Path,
                                                                       sweep_store: Path, redis_url: str) -> None:
    db = tmp_path / "results.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    port = free_port()
    env = {**os.environ, **production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                          LESIONLITE_EXTERNAL_URL=f"https://127.0.0.1:{port}",
                                          LESIONLITE_DB=str(db))}
    env.pop("LESIONLITE_VARIANT")  # the site chooses from the store, as the README's production set-up may
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                   "webapp:create_app()"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    holder = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/auth/login", proc=server)
        deadline = time.monotonic() + 30
        while len(_workers(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = _workers(server.pid)
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        assert holder.stdout.readline().strip() == "locked"
        os.kill(before[0], signal.SIGKILL)  # a worker dies (a timeout, an out-of-memory kill) during the sweep
        booted = "has no photo check"  # what each worker logs once its app is made
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the replacement imports torch etc.: seconds on a busy machine
            text = log.read_text()
            if text.count(booted) >= 3 or "Worker failed to boot" in text:
                break
            time.sleep(0.5)
        assert "Worker failed to boot" not in text and text.count(booted) == 3, text[-2000:]
        assert server.poll() is None and len(_workers(server.pid)) == 2
        assert all(requests.get(f"{base}/auth/login", timeout=10).status_code == 200 for _ in range(6))
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        server.terminate()
        server.wait(timeout=30)


def test_a_fresh_start_with_the_store_locked_serves_the_last_choice_with_a_warning(
        tmp_path: Path, variant_folder: Path, sweep_store: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from webapp import create_app
    from webapp.predictor import DEPLOYED_CHOICE_FILE

    db = tmp_path / "results.duckdb"
    db.write_bytes(sweep_store.read_bytes())
    for key, value in production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                     LESIONLITE_DB=str(db)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LESIONLITE_VARIANT")
    chosen = create_app().config["DEPLOYED_VARIANT"]
    record = tmp_path / "instance" / DEPLOYED_CHOICE_FILE
    assert record.is_file() and oct(record.parent.stat().st_mode & 0o777) == "0o700"
    record.write_text(record.read_text().replace(f'"master_pid": {os.getppid()}', '"master_pid": 1'))  # a new server
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level("WARNING"):
            assert create_app().config["DEPLOYED_VARIANT"] == chosen
        assert "serving the variant chosen at the last start" in caplog.text
    finally:
        holder.kill()
        holder.communicate()


# 1. A progressive-JPEG scan bomb is refused at once on the site ------------------------------------------------

def test_a_scan_bomb_upload_is_refused_without_decoding(prod: Site) -> None:
    from tests.images import scan_bomb_jpeg

    client = register_and_verify(prod)
    login(client)
    start = time.perf_counter()
    page = post(client, "/check/", {"image": (io.BytesIO(scan_bomb_jpeg(3000)), "bomb.jpg")}, form="/check/",
                content_type="multipart/form-data")
    assert page.status_code == 400 and b"too many scans" in page.data
    assert time.perf_counter() - start < 5  # seconds of CPU per request before the fix (16 s for 2,000 scans)


# 4. Changing the address reveals nothing about who holds the new one -------------------------------------------

def test_an_email_change_shows_the_same_for_a_taken_and_a_free_address(prod: Site) -> None:
    register_and_verify(prod, "owner@example.org")
    client = register_and_verify(prod, "pat@example.org")
    login(client)
    pages, sent_before = [], len(prod.mails().messages)
    for address in ("owner@example.org", "free@example.org"):
        post(client, "/auth/profile/email", {"email": address, "current_password": PASSWORD}, form="/auth/profile")
        page = client.get("/auth/profile").data.decode()
        pages.append(re.sub(r'value="[^"]+"', "", page))  # CSRF tokens differ; nothing else may
        with prod.app.app_context():
            assert users.by_email("pat@example.org") is not None  # the account keeps its address until confirmed
            assert users.by_email("free@example.org") is None  # and holds no address it does not own
    assert pages[0] == pages[1]
    mails = prod.mails().messages[sent_before:]
    assert [m["To"] for m in mails] == ["owner@example.org", "free@example.org"]
    assert "already has an account" in mails[0].get_body(preferencelist=("plain",)).get_content()


# 5. A reset request does the same work for known and unknown addresses ----------------------------------------

def test_reset_requests_do_the_same_work_for_known_and_unknown_addresses(prod: Site,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    register_and_verify(prod)
    calls: list[str] = []
    real_token, real_put = auth_routes.make_token, mailer.outbox.put
    monkeypatch.setattr(auth_routes, "make_token", lambda *a, **k: calls.append("token") or real_token(*a, **k))
    monkeypatch.setattr(mailer.outbox, "put", lambda item: calls.append(f"queue:{item.template}") or real_put(item))
    sent_before = len(prod.mails().messages)
    post(prod.client(), "/auth/reset", {"email": "pat@example.org"})
    known, calls[:] = list(calls), []
    post(prod.client(), "/auth/reset", {"email": "nobody@example.org"})
    assert known == calls == ["token", "queue:reset"]
    assert len(prod.mails().messages) == sent_before + 1  # only the known address got a mail


# 6. Two former 500s ----------------------------------------------------------------------------------------------

def test_a_huge_token_id_is_404_and_two_accounts_claiming_one_address_get_answers(prod: Site) -> None:
    client = register_and_verify(prod, "a@example.org")
    login(client, "a@example.org")
    assert post(client, "/auth/profile/tokens/99999999999999999999999/revoke", {},
                form="/auth/profile").status_code == 404
    other = register_and_verify(prod, "b@example.org")
    login(other, "b@example.org")
    links = []
    for c in (client, other):  # both ask for the same free address; both get a confirmation link
        post(c, "/auth/profile/email", {"email": "shared@example.org", "current_password": PASSWORD},
             form="/auth/profile")
        links.append(re.search(r"https://\S+", prod.mails().text()).group(0).removeprefix(SITE))
    first, second = (prod.client().get(link, follow_redirects=True) for link in links)
    assert first.status_code == second.status_code == 200
    assert b"can no longer be used" in second.data
    with prod.app.app_context():  # the first to confirm has it; the other account keeps its own address
        assert users.by_email("shared@example.org") is not None and users.by_email("a@example.org") is None
        assert users.by_email("b@example.org") is not None


# 7. Password change is rate-limited like the other password-checked changes -----------------------------------

def test_password_change_is_rate_limited(prod: Site) -> None:
    client = register_and_verify(prod)
    login(client)
    codes = [post(client, "/auth/profile/password", {"current_password": f"wrong guess number {i}",
                                                     "password": "another long passphrase"},
                  form="/auth/profile").status_code for i in range(7)]
    assert codes[:5] == [400] * 5 and set(codes[5:]) == {429}  # refused beside the form, then limited


# 8. Guessable passwords are refused -------------------------------------------------------------------------------

@pytest.mark.parametrize(("password", "email"), [
    ("correcthorsebatterystaple", "pat@example.org"), ("Summer2025!!!", "pat@example.org"),
    ("iloveyou2024!!", "pat@example.org"), ("skinlesion2024", "pat@example.org"),
    ("Jdoe2024!Jdoe", "jdoe@example.org"), ("jdoe.example.org1", "jdoe@example.org"),
])
def test_guessable_passwords_are_refused_at_registration(prod: Site, password: str, email: str) -> None:
    page = post(prod.client(), "/auth/register", {"email": email, "password": password, "consent": "y"})
    assert b"too easy to guess" in page.data
    with prod.app.app_context():
        assert users.by_email(email) is None


def test_strong_passwords_still_pass() -> None:
    from webapp.security import password_problem

    for password in ("velvet quasar tundra lantern", "Quartz-Biscuit-Ember-42", "x7#Gq!pL2@vZ9", "4839!#2@93847"):
        assert password_problem(password, email="pat@example.org") is None, password


# 9. Sessions are bound to the user agent, not to a client-written address ----------------------------------------

def test_sessions_survive_a_network_change_and_ignore_forged_forwarding_headers(prod: Site) -> None:
    client = register_and_verify(prod)
    ua = {"User-Agent": "PhoneBrowser/1.0"}
    login(client, headers={**ua, "X-Forwarded-For": "203.0.113.5"})
    assert client.get("/check/", headers={**ua, "X-Forwarded-For": "198.51.100.7"}).status_code == 200
    # a forged first entry (the client writes it; the proxy appends the real address) changes nothing either
    assert client.get("/check/", headers={**ua, "X-Forwarded-For": "10.0.0.1, 198.51.100.7"}).status_code == 200
    assert client.get("/check/", headers={"User-Agent": "OtherBrowser/2.0"}).status_code == 302  # strong mode


# 12. Mails per recipient, stored checks per account, the instance folder ------------------------------------------

def test_one_inbox_cannot_be_flooded_from_many_addresses(prod: Site) -> None:
    register_and_verify(prod, "victim@example.org")
    sent_before = len(prod.mails().messages)
    for i in range(8):  # two client addresses, each within its own reset budget (5 a minute)
        reply = post(prod.client(), "/auth/reset", {"email": "victim@example.org"},
                     headers={"X-Forwarded-For": f"203.0.113.{i % 2 + 1}"})
        assert reply.status_code == 302  # the asker sees the usual answer
    to_victim = [m for m in prod.mails().messages if m["To"] == "victim@example.org"]
    assert sent_before == 1 and len(to_victim) == 3  # 3 per 15 minutes, the verification mail included


def test_an_account_stores_at_most_its_quota_of_checks(tmp_path: Path, variant_folder: Path, redis_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server() as (inbox, port):
        instance = tmp_path / "instance"
        instance.mkdir(mode=0o755)  # made earlier by hand, world-readable
        for key, value in production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url,
                                         MAIL_SERVER="127.0.0.1", MAIL_PORT=str(port),
                                         LESIONLITE_TRUSTED_PROXIES="1",
                                         LESIONLITE_MAX_CHECKS_PER_ACCOUNT="2").items():
            monkeypatch.setenv(key, value)
        site = Site(create_app(), inbox)
        assert oct(instance.stat().st_mode & 0o777) == "0o700"
        client = register_and_verify(site)
        login(client)
        codes = [post(client, "/check/", {"image": (io.BytesIO(jpeg_bytes()), f"{i}.jpg")}, form="/check/",
                      content_type="multipart/form-data").status_code for i in range(3)]
        assert codes == [302, 302, 400]
        page = post(client, "/check/", {"image": (io.BytesIO(jpeg_bytes()), "x.jpg")}, form="/check/",
                    content_type="multipart/form-data")
        assert b"the most it can store" in page.data
