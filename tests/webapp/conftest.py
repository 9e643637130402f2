"""Web app fixtures (flaskr style): an app on a temporary instance folder, clients, an AuthActions helper."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_mail import Message

from webapp import create_app
from webapp.config import RATELIMIT_KEYS
from webapp.extensions import limiter, mail
from webapp.mailer import outbox as mail_queue

PASSWORD = "velvet quasar tundra lantern"
RELAXED_LIMITS = {k: "1000 per minute" for k in RATELIMIT_KEYS}


@contextmanager
def sent_mail() -> Iterator[list[Message]]:
    """The messages sent while the block runs (mail leaves in the background: wait for the queue to drain)."""
    with mail.record_messages() as messages:
        yield messages
        assert mail_queue.join(timeout=30), "mail queue did not drain"


@pytest.fixture(scope="session")
def variant_folder(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site's model: a tiny calibrated fp32 variant, built once per session without a sweep."""
    from tests.site_model import build_site_model

    return build_site_model(synthetic_root, tmp_path_factory.mktemp("site_model"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server on localhost for the shared rate-limit counters (Debian's redis-server)."""
    from tests.browser import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("Debian's redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def app(tmp_path: Path, variant_folder: Path) -> Iterator[Flask]:
    app = create_app({
        "TESTING": True, "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "INSTANCE_PATH": str(tmp_path / "instance"), "WTF_CSRF_ENABLED": False,
        "LESIONLITE_VARIANT": str(variant_folder), "MAIL_SUPPRESS_SEND": True, "MAIL_TO_LOG": False,
        **RELAXED_LIMITS,
    })
    limiter.reset()
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class AuthActions:
    """Register, verify (through the mail that was sent), log in and out."""

    def __init__(self, app: Flask, client: FlaskClient):
        self.app, self.client = app, client

    def register(self, email: str = "pat@example.org", password: str = PASSWORD, *, verify: bool = True):
        with sent_mail() as outbox:
            response = self.client.post("/auth/register", data={"email": email, "password": password, "consent": "y"})
        if verify and outbox:
            self.client.get(link_in(outbox[-1].body))
        return response, outbox

    def login(self, email: str = "pat@example.org", password: str = PASSWORD, remember: bool = False):
        data = {"email": email, "password": password}
        if remember:
            data["remember"] = "y"
        return self.client.post("/auth/login", data=data)

    def logout(self):
        return self.client.post("/auth/logout")


def link_in(text: str) -> str:
    """The path of the first link in a mail body (the test client takes paths)."""
    url = re.search(r"https?://\S+", text).group(0)
    return re.sub(r"^https?://[^/]+", "", url)


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    return AuthActions(app, client)


@pytest.fixture
def prod(tmp_path: Path, variant_folder: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch):
    """The production site in process (``tests.webapp.production``): Redis limits, SMTP on localhost, one proxy."""
    from tests.webapp.production import Site, production_env
    from tests.webapp.smtp import smtp_server
    from webapp import create_app
    from webapp.extensions import limiter

    with smtp_server() as (inbox, port):
        env = production_env(tmp_path, variant_folder, RATELIMIT_STORAGE_URI=redis_url, MAIL_SERVER="127.0.0.1",
                             MAIL_PORT=str(port), LESIONLITE_TRUSTED_PROXIES="1")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = create_app()
        limiter.reset()
        yield Site(app, inbox)
        limiter.reset()
