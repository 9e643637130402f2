"""Sending mail outside the request: a per-process queue and one background sender thread.

A request only queues a message (microseconds), so the response time says nothing about whether a mail was
sent, and a slow or dead SMTP server never holds a request. Messages are rendered and sent by the sender
thread inside the app's context. Links in mail are built from the configured external URL, never from the
request's Host header (:func:`external_url`).

In development (``MAIL_TO_LOG``) the text is written to the log instead, so links stay usable without a server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, render_template, url_for
from flask_mail import Message

from webapp.extensions import mail

log = logging.getLogger("lesionlite.mail")


CHECK_MAIL = "If that address can be used, we have sent it an email with a link. Please check your inbox."


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute link for a mail: ``EXTERNAL_URL`` + the endpoint's path (the Host header plays no part)."""
    return current_app.config["EXTERNAL_URL"].rstrip("/") + url_for(endpoint, _external=False, **values)


@dataclass
class _Outgoing:
    app: Flask  # the app that queued it (its config decides how the mail leaves)
    to: str | None  # None: render only (see send)
    subject: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)


class MailQueue:
    """One queue and sender thread per process (started on first use, so each forked worker gets its own)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Outgoing] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def put(self, item: _Outgoing) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._queue = queue.Queue()  # a queue inherited through fork has no sender here
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="lesionlite-mail", daemon=True)
                self._thread.start()
        self._queue.put(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                with item.app.app_context():
                    _deliver(item)
            except Exception:  # a failed mail must not kill the sender; it is logged with its recipient
                log.exception("mail to %s (%s) could not be sent", item.to, item.subject)
            finally:
                self._queue.task_done()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message was handled (tests, shutdown); False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)


outbox = MailQueue()


def _deliver(item: _Outgoing) -> None:
    text = render_template(f"email/{item.template}.txt", **item.context)
    if item.to is None:  # the twin of a real message for an unknown address: rendered, not sent
        render_template(f"email/{item.template}.html", **item.context)
        return
    if current_app.config.get("MAIL_TO_LOG"):
        log.warning("mail to %s: %s\n%s", item.to, item.subject, text)
        return
    html = render_template(f"email/{item.template}.html", **item.context)
    mail.send(Message(subject=f"LesionLite: {item.subject}", recipients=[item.to], body=text, html=html))


def recipient_allowed(to: str) -> bool:
    """Whether one more mail may go to ``to`` (RATELIMIT_MAIL_RECIPIENT, counted in the shared limit store): no one
    can flood a person's inbox by asking from many client addresses."""
    from limits import parse_many

    from webapp.extensions import limiter

    key = hashlib.sha256(to.strip().lower().encode()).hexdigest()[:32]
    items = parse_many(current_app.config["RATELIMIT_MAIL_RECIPIENT"])
    return all([limiter.limiter.hit(item, "mail-recipient", key) for item in items])  # count in every window


def send(to: str | None, subject: str, template: str, **context: object) -> None:
    """Queue ``email/<template>.txt`` and ``.html`` for ``to``; returns at once. ``to=None`` renders the message
    and sends nothing (the same work for a request whose answer must not depend on whether an address exists);
    so does a recipient over its mail limit (logged)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if to is not None and not recipient_allowed(to):
        log.warning("mail limit reached for a recipient: %r not sent", subject)
        to = None
    outbox.put(_Outgoing(app, to, subject, template, dict(context)))
