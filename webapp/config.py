"""Configuration from the environment (``LESIONLITE_*`` and the usual ``MAIL_*``), with no default secret.

Outside development and testing, ``SECRET_KEY`` must be set or the app refuses to start.
"""

from __future__ import annotations

import os
from typing import Any

from core.errors import ConfigError

COMMON_DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    "UNCERTAIN_THRESHOLD": 0.6,
    "HISTORY_PAGE_SIZE": 10,
    "VERIFY_TOKEN_MAX_AGE": 24 * 3600,
    "RESET_TOKEN_MAX_AGE": 3600,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,  # tied to the session instead of a clock
    "RATELIMIT_LOGIN": "10 per minute",
    "RATELIMIT_REGISTER": "5 per minute",
    "RATELIMIT_RESET": "5 per minute",
    "RATELIMIT_RESEND": "3 per minute",
    "RATELIMIT_API": "120 per minute",
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True,
    "MAIL_DEFAULT_SENDER": "LesionLite <no-reply@localhost>",
}


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def from_environment(env: str | None = None) -> dict[str, Any]:
    """Settings for ``LESIONLITE_ENV`` = production (default), development or testing."""
    env = env or os.environ.get("LESIONLITE_ENV", "production")
    allowed = ("production", "development", "testing")
    if env not in allowed:
        raise ConfigError(f"LESIONLITE_ENV={env!r} is not allowed; allowed: {', '.join(allowed)}")
    production = env == "production"
    cfg = dict(COMMON_DEFAULTS)
    cfg.update(
        ENV_NAME=env,
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        SESSION_COOKIE_SECURE=_env_bool("SESSION_COOKIE_SECURE", production),
        REMEMBER_COOKIE_SECURE=_env_bool("SESSION_COOKIE_SECURE", production),
        LESIONLITE_VARIANT=os.environ.get("LESIONLITE_VARIANT"),
        LESIONLITE_DB=os.environ.get("LESIONLITE_DB", "results/results.duckdb"),
        UNCERTAIN_THRESHOLD=float(os.environ.get("LESIONLITE_UNCERTAIN_THRESHOLD",
                                                 COMMON_DEFAULTS["UNCERTAIN_THRESHOLD"])),
        MAIL_SERVER=os.environ.get("MAIL_SERVER", "localhost"),
        MAIL_PORT=int(os.environ.get("MAIL_PORT", "25")),
        MAIL_USE_TLS=_env_bool("MAIL_USE_TLS", False),
        MAIL_USE_SSL=_env_bool("MAIL_USE_SSL", False),
        MAIL_USERNAME=os.environ.get("MAIL_USERNAME"),
        MAIL_PASSWORD=os.environ.get("MAIL_PASSWORD"),
        MAIL_DEFAULT_SENDER=os.environ.get("MAIL_DEFAULT_SENDER", COMMON_DEFAULTS["MAIL_DEFAULT_SENDER"]),
        # In development mail goes to the log (links usable without a server) unless MAIL_SERVER is given.
        MAIL_TO_LOG=_env_bool("MAIL_TO_LOG", env == "development" and "MAIL_SERVER" not in os.environ),
        RATELIMIT_STORAGE_URI=os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        PREFERRED_URL_SCHEME="https" if production else "http",
    )
    for key in ("RATELIMIT_LOGIN", "RATELIMIT_REGISTER", "RATELIMIT_RESET", "RATELIMIT_RESEND", "RATELIMIT_API"):
        cfg[key] = os.environ.get(f"LESIONLITE_{key}", cfg[key])
    if env == "development" and not cfg["SECRET_KEY"]:
        cfg["SECRET_KEY"] = os.urandom(32).hex()  # sessions end when the dev server restarts; never in production
    return cfg


def check(cfg: dict[str, Any]) -> None:
    """Refuse to start with an unsafe configuration."""
    if not cfg.get("SECRET_KEY"):
        raise ConfigError("SECRET_KEY is not set: export a long random value (e.g. python -c 'import secrets; "
                          "print(secrets.token_hex(32))') before starting the web app")
    if cfg.get("ENV_NAME") == "production" and len(str(cfg["SECRET_KEY"])) < 32:
        raise ConfigError("SECRET_KEY is too short for production: use at least 32 characters")
