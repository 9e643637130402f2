"""Sending mail: through Flask-Mail's SMTP connection, or to the log in development (links stay usable)."""

from __future__ import annotations

import logging

from flask import current_app, render_template
from flask_mail import Message

from webapp.extensions import mail

log = logging.getLogger("lesionlite.mail")


def send(to: str, subject: str, template: str, **context: object) -> None:
    """Render ``email/<template>.txt`` and ``.html`` and send them; in development, log the text instead."""
    text = render_template(f"email/{template}.txt", **context)
    html = render_template(f"email/{template}.html", **context)
    if current_app.config.get("MAIL_TO_LOG"):
        log.warning("mail to %s: %s\n%s", to, subject, text)
        return
    mail.send(Message(subject=f"LesionLite: {subject}", recipients=[to], body=text, html=html))
