"""Verification and reset mails go through a real SMTP server on localhost; the tests follow their links."""

from __future__ import annotations

from pathlib import Path

from tests.webapp.conftest import PASSWORD, RELAXED_LIMITS, link_in
from tests.webapp.smtp import smtp_server
from webapp import create_app, users
from webapp.mailer import outbox as mail_queue


def test_verification_and_reset_mail_over_smtp(tmp_path: Path, variant_folder: Path) -> None:
    with smtp_server() as (inbox, port):
        app = create_app({"TESTING": True, "SECRET_KEY": "s" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                          "WTF_CSRF_ENABLED": False, "LESIONLITE_VARIANT": str(variant_folder),
                          "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_TO_LOG": False,
                          "MAIL_SUPPRESS_SEND": False,
                          **RELAXED_LIMITS})
        client = app.test_client()
        client.post("/auth/register", data={"email": "sam@example.org", "password": PASSWORD, "consent": "y"})
        assert mail_queue.join(timeout=30)  # mail leaves in the background
        assert len(inbox.messages) == 1
        mail = inbox.messages[0]
        assert mail["To"] == "sam@example.org" and "confirm your email" in mail["Subject"]
        client.get(link_in(inbox.text()))
        with app.app_context():
            assert users.by_email("sam@example.org").verified

        client.post("/auth/reset", data={"email": "sam@example.org"})
        assert mail_queue.join(timeout=30)
        assert "reset your password" in inbox.messages[1]["Subject"]
        reply = client.post(link_in(inbox.text()), data={"password": "a fresh long passphrase"}, follow_redirects=True)
        assert b"Your password is changed" in reply.data
        logged_in = client.post("/auth/login", data={"email": "sam@example.org", "password": "a fresh long passphrase"})
        assert logged_in.status_code == 302
