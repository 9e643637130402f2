"""Web app fixtures (flaskr style): an app on a temporary instance folder, clients, an AuthActions helper."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from webapp import create_app
from webapp.extensions import limiter, mail

PASSWORD = "correct horse battery staple"
RELAXED_LIMITS = {f"RATELIMIT_{k}": "1000 per minute" for k in ("LOGIN", "REGISTER", "RESET", "RESEND", "API")}


@pytest.fixture(scope="session")
def variant_folder(sweep_store: Path) -> Path:
    return sweep_store.parent / "variants" / next(p.name for p in (sweep_store.parent / "variants").iterdir()) / \
        "pruned-0.5-static"


@pytest.fixture
def app(tmp_path: Path, variant_folder: Path) -> Iterator[Flask]:
    app = create_app({
        "TESTING": True, "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "INSTANCE_PATH": str(tmp_path / "instance"), "WTF_CSRF_ENABLED": False,
        "LESIONLITE_VARIANT": str(variant_folder), "MAIL_SUPPRESS_SEND": True, "MAIL_TO_LOG": False,
        "SERVER_NAME": "localhost", **RELAXED_LIMITS,
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

    def register(self, email: str = "pat@example.org", password: str = PASSWORD, *, verify: bool = True):  # noqa: ANN201
        with mail.record_messages() as outbox:
            response = self.client.post("/auth/register", data={"email": email, "password": password})
        if verify and outbox:
            self.client.get(link_in(outbox[-1].body))
        return response, outbox

    def login(self, email: str = "pat@example.org", password: str = PASSWORD, remember: bool = False):  # noqa: ANN201
        data = {"email": email, "password": password}
        if remember:
            data["remember"] = "y"
        return self.client.post("/auth/login", data=data)

    def logout(self):  # noqa: ANN201
        return self.client.post("/auth/logout")


def link_in(text: str) -> str:
    """The path of the first link in a mail body (the test client takes paths)."""
    url = re.search(r"https?://\S+", text).group(0)
    return re.sub(r"^https?://[^/]+", "", url)


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    return AuthActions(app, client)
