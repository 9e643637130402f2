"""The production site in process, as the security tests use it: its settings (the README's production configuration),
a browser at its public https address, and the form steps (CSRF token, register and verify, log in). The ``prod``
fixture that starts it lives in ``conftest.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.webapp.conftest import PASSWORD
from tests.webapp.smtp import Inbox
from webapp import mailer

SITE = "https://lesionlite.example.org"
REPO = Path(__file__).resolve().parents[2]


class SiteClient(FlaskClient):
    """A browser at the site's public https address (Secure cookies travel, the Host header is the real one)."""

    def open(self, *args: object, **kwargs: object):
        kwargs.setdefault("base_url", SITE)
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Referer", f"{SITE}/")  # browsers send it; CSRF over https checks it (same origin)
        return super().open(*args, headers=headers, **kwargs)


@dataclass
class Site:
    app: Flask
    inbox: Inbox

    def client(self) -> FlaskClient:
        self.app.test_client_class = SiteClient
        return self.app.test_client()

    def mails(self, timeout: float = 30) -> Inbox:
        assert mailer.outbox.join(timeout), "mail queue did not drain"
        return self.inbox


def production_env(tmp_path: Path, variant_folder: Path, **extra: str) -> dict[str, str]:
    """The production settings of the README. The tiny test variant has no photo check (a gate fitted on tiny
    synthetic images would turn away the tests' uploads), so the operator's override is set; that production
    refuses to start without it is tested on its own (test_production_refuses_a_model_without_its_photo_check)."""
    return {"LESIONLITE_ENV": "production", "SECRET_KEY": "p" * 64, "LESIONLITE_EXTERNAL_URL": SITE,
            "LESIONLITE_INSTANCE": str(tmp_path / "instance"), "LESIONLITE_VARIANT": str(variant_folder),
            "MAIL_DEFAULT_SENDER": "LesionLite <no-reply@example.org>", "LESIONLITE_ALLOW_NO_PHOTO_CHECK": "1",
            **extra}


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).data.decode()
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def post(client: FlaskClient, path: str, data: dict, *, form: str | None = None, **kw: object):
    """POST a form the way a browser does: with the CSRF token of the page that shows it."""
    return client.post(path, data={**data, "csrf_token": csrf(client, form or path)}, **kw)


def register_and_verify(site: Site, email: str = "pat@example.org") -> FlaskClient:
    client = site.client()
    post(client, "/auth/register", {"email": email, "password": PASSWORD, "consent": "y"})
    link = re.search(r"https://\S+", site.mails().text()).group(0)
    client.get(link.removeprefix(SITE))
    return client


def login(client: FlaskClient, email: str = "pat@example.org", password: str = PASSWORD, **kw: object):
    return post(client, "/auth/login", {"email": email, "password": password}, **kw)


