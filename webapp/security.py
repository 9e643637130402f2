"""Passwords, signed single-purpose tokens, API tokens and security headers."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from flask import Flask, Response, current_app, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD, MAX_PASSWORD = 12, 128
MIN_STRENGTH = 3  # zxcvbn score 0-4; 3 = "safely unguessable: moderate protection from offline slow-hash attacks"


ZXCVBN_MAX_LENGTH = 72


def password_problem(password: str, *, email: str = "", name: str = "") -> str | None:
    """Why a new password is refused (length, or guessable by zxcvbn's frequency lists and patterns), or None."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    from zxcvbn import zxcvbn

    # zxcvbn knows the account's words only if told: the address, its parts, the name's parts and the site's own
    # vocabulary (a skin-check site's users reach for "skin", "lesion", "mole").
    parts = re.split(r"[^a-z0-9]+", f"{email} {name}".lower())
    joined = re.sub(r"[^a-z]+", "", email.lower())  # "jdoe.example.org1" has the address's letters in order
    user_inputs = [x for x in (email, email.partition("@")[0], joined, name, *parts, *SITE_WORDS, *_SEASONS,
                               *FAMOUS_PASSPHRASES) if x]
    # zxcvbn refuses input over 72 characters (ValueError); a longer passphrase is judged by its first 72.
    password = password[:ZXCVBN_MAX_LENGTH]
    result = zxcvbn(password, user_inputs=user_inputs)
    if result["score"] < MIN_STRENGTH:
        hint = result["feedback"].get("warning") or "It would be easy to guess."
        return f"This password is too easy to guess: {hint.rstrip('.')}. Try a few uncommon words together."
    # What breach lists are full of and zxcvbn scores too kindly: a guessable core dressed with a year, a season
    # and some digits or symbols ("Summer2025!!!", "iloveyou2024!!", "Jdoe2024!Jdoe"). Judge the core alone.
    core = _dressing.sub("", password.lower())
    if core and zxcvbn(core, user_inputs=user_inputs)["score"] < MIN_STRENGTH - 1:
        return ("This password is too easy to guess: a common word or name with a year, digits or symbols "
                "added. Try a few uncommon words together.")
    return None


SITE_WORDS = ("lesionlite", "lesion", "skin", "skinlesion", "skincheck", "melanoma", "mole", "moles", "derma",
              "dermatology", "dermatologist", "doctor", "health", "password", "passphrase")
FAMOUS_PASSPHRASES = ("correcthorsebatterystaple", "correct horse battery staple", "iloveyou", "trustno1",
                      "letmein", "qwertyuiop")
_SEASONS = ("spring", "summer", "autumn", "fall", "winter")
_dressing = re.compile(r"(19|20)\d\d|[^a-z]+")  # years and every non-letter


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def session_identifier() -> str:
    """What Flask-Login's "strong" session protection binds a session to: the user agent only (never an address
    the client can write, and not the network a phone happens to be on)."""
    return hashlib.sha512(request.headers.get("User-Agent", "").encode("utf8", "replace")).hexdigest()


def new_session_token() -> str:
    """Rotated at logout and password change: every other session and remember-me cookie stops working."""
    return secrets.token_urlsafe(24)


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"lesionlite-{purpose}")


def make_token(purpose: str, payload: dict[str, Any]) -> str:
    return _serializer(purpose).dumps(payload)


def read_token(purpose: str, token: str, *, max_age: int) -> dict[str, Any] | None:
    """The payload of a valid, unexpired token of this purpose; None otherwise."""
    try:
        data = _serializer(purpose).loads(token, max_age=max_age)
    except (SignatureExpired, BadSignature):
        return None
    return data if isinstance(data, dict) else None


def password_fingerprint(password_hash: str) -> str:
    """Binds a reset token to the current password: once the password changes, the token is spent."""
    return hmac.new(current_app.config["SECRET_KEY"].encode(), password_hash.encode(), hashlib.sha256).hexdigest()[:16]


def new_api_token() -> tuple[str, str]:
    """(token shown once to the user, sha256 stored)."""
    token = "ll_" + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def add_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        if request.endpoint != "static":
            # Pages hold personal results, CSRF tokens or a new API token: never stored by browsers or proxies.
            response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
