"""Configuration from the environment (``LESIONLITE_*`` and the usual ``MAIL_*``), with no default secret.

In production the app refuses to start without ``SECRET_KEY``, without ``LESIONLITE_EXTERNAL_URL`` (the only
source of links in mail; requests for other hosts are refused), and with per-process rate-limit counters
unless it is declared a single worker.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigError

COMMON_DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    "UNCERTAIN_THRESHOLD": None,  # None: the deployed variant's card decides (calibrated on validation)
    "HISTORY_PAGE_SIZE": 10,
    "VERIFY_TOKEN_MAX_AGE": 24 * 3600,
    "RESET_TOKEN_MAX_AGE": 3600,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_DURATION": timedelta(days=30),  # ASVS 3.3.2
    "WTF_CSRF_TIME_LIMIT": None,  # tied to the session instead of a clock
    "RATELIMIT_LOGIN": "10 per minute",
    "RATELIMIT_REGISTER": "5 per minute",
    "RATELIMIT_RESET": "5 per minute",
    "RATELIMIT_API": "120 per minute",
    "RATELIMIT_UPLOAD": "30 per minute",
    "RATELIMIT_ACCOUNT": "5 per minute",  # password-checked profile changes (email, deletion)
    # Failed logins per (account, client address): a stepped back-off that an attacker elsewhere cannot exhaust.
    "RATELIMIT_LOGIN_FAILURES": "5 per minute;10 per 10 minutes;20 per hour",
    # Failed logins per account from all addresses together (ASVS 2.2.1); browsers that signed in before are exempt.
    "RATELIMIT_LOGIN_FAILURES_ACCOUNT": "100 per hour",
    # Mails to one address, whoever asks: more are rendered and dropped (the answer to the asker is the same).
    "RATELIMIT_MAIL_RECIPIENT": "3 per 15 minutes;10 per day",
    "RATELIMIT_STORAGE_URI": "memory://",
    "MAX_CHECKS_PER_ACCOUNT": 1000,  # stored checks (each keeps its image) per account
    "MAX_CHECKS_TOTAL": 200_000,  # all accounts together (at most ~1 MB each: bounds the disk the site can fill)
    "RATELIMIT_HEADERS_ENABLED": True,
    "MAIL_DEFAULT_SENDER": "LesionLite <no-reply@localhost>",
}


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None


def from_environment(env: str | None = None) -> dict[str, Any]:
    """Settings for ``LESIONLITE_ENV`` = production (default), development or testing."""
    env = env or os.environ.get("LESIONLITE_ENV", "production")
    allowed = ("production", "development", "testing")
    if env not in allowed:
        raise ConfigError(f"LESIONLITE_ENV={env!r} is not allowed; allowed: {', '.join(allowed)}")
    production = env == "production"
    secure = _env_bool("SESSION_COOKIE_SECURE", production)
    default_url = {"production": None, "development": "http://localhost:5000", "testing": "http://localhost"}[env]
    cfg = dict(COMMON_DEFAULTS)
    cfg.update(
        ENV_NAME=env,
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        EXTERNAL_URL=os.environ.get("LESIONLITE_EXTERNAL_URL", default_url),
        EXTRA_TRUSTED_HOSTS=[h.strip() for h in os.environ.get("LESIONLITE_TRUSTED_HOSTS", "").split(",") if h.strip()],
        TRUSTED_PROXIES=int(os.environ.get("LESIONLITE_TRUSTED_PROXIES", "0")),
        SINGLE_WORKER=_env_bool("LESIONLITE_SINGLE_WORKER", False),
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_SECURE=secure,
        # __Host- cookies are only accepted over HTTPS, for this exact host, path /: no subdomain can set them.
        SESSION_COOKIE_NAME="__Host-session" if secure else "session",
        REMEMBER_COOKIE_NAME="__Host-remember" if secure else "remember_token",
        LESIONLITE_VARIANT=os.environ.get("LESIONLITE_VARIANT"),
        LESIONLITE_DB=os.environ.get("LESIONLITE_DB", "results/results.duckdb"),
        UNCERTAIN_THRESHOLD=_env_float("LESIONLITE_UNCERTAIN_THRESHOLD"),
        # An operator who knows why may serve a model without its photo check in production (logged at start-up);
        # every result given without one says so itself.
        ALLOW_NO_PHOTO_CHECK=_env_bool("LESIONLITE_ALLOW_NO_PHOTO_CHECK", False),
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
    for key in RATELIMIT_KEYS:
        cfg[key] = os.environ.get(f"LESIONLITE_{key}", cfg[key])
    for key in ("MAX_CHECKS_PER_ACCOUNT", "MAX_CHECKS_TOTAL"):
        quota = os.environ.get(f"LESIONLITE_{key}")
        if quota is not None:
            if not quota.strip().isdigit() or int(quota) < 1:
                raise ConfigError(f"LESIONLITE_{key}={quota!r} must be a whole number of at least 1")
            cfg[key] = int(quota)
    return cfg


RATELIMIT_KEYS = ("RATELIMIT_LOGIN", "RATELIMIT_REGISTER", "RATELIMIT_RESET", "RATELIMIT_API",
                  "RATELIMIT_UPLOAD", "RATELIMIT_ACCOUNT", "RATELIMIT_LOGIN_FAILURES",
                  "RATELIMIT_LOGIN_FAILURES_ACCOUNT", "RATELIMIT_MAIL_RECIPIENT")


def development_secret(instance_path: str) -> str:
    """A random key kept in the instance folder (0600): every worker and restart of a dev server shares it."""
    path = os.path.join(instance_path, "dev-secret-key")
    os.makedirs(instance_path, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex())
    with open(path) as f:  # whoever created it first wins; everyone reads the same key
        return f.read().strip()


def trusted_hosts(cfg: dict[str, Any]) -> list[str]:
    """The hosts the app answers to: the external URL's, the configured extras, and loopback in development."""
    hosts = [urlsplit(cfg["EXTERNAL_URL"]).hostname or "", *cfg.get("EXTRA_TRUSTED_HOSTS", [])]
    if cfg.get("ENV_NAME") == "development":
        hosts += ["localhost", "127.0.0.1"]
    return list(dict.fromkeys(h for h in hosts if h))


def check(cfg: dict[str, Any]) -> None:
    """Refuse to start with an unsafe configuration."""
    production = cfg.get("ENV_NAME") == "production"
    if not cfg.get("SECRET_KEY"):
        raise ConfigError("SECRET_KEY is not set: export a long random value (e.g. python -c 'import secrets; "
                          "print(secrets.token_hex(32))') before starting the web app")
    if production and len(str(cfg["SECRET_KEY"])) < 32:
        raise ConfigError("SECRET_KEY is too short for production: use at least 32 characters")
    url = cfg.get("EXTERNAL_URL")
    if not url:
        raise ConfigError("LESIONLITE_EXTERNAL_URL is not set: give the site's public address (e.g. "
                          "https://lesionlite.example.org); links in mail are built from it, never from the request")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"LESIONLITE_EXTERNAL_URL={url!r} must be scheme://host[:port] with no path, "
                          "e.g. https://lesionlite.example.org")
    if production and parts.scheme != "https":
        raise ConfigError(f"LESIONLITE_EXTERNAL_URL={url!r}: production links must use https")
    per_process = str(cfg.get("RATELIMIT_STORAGE_URI", "")).startswith("memory://")
    if production and per_process and not cfg.get("SINGLE_WORKER"):
        raise ConfigError("rate limits are counted per process with RATELIMIT_STORAGE_URI=memory://, so several "
                          "workers multiply them: set RATELIMIT_STORAGE_URI=redis://HOST:6379, or "
                          "LESIONLITE_SINGLE_WORKER=1 if this is the only worker")
    if cfg.get("TRUSTED_PROXIES", 0) < 0:
        raise ConfigError("LESIONLITE_TRUSTED_PROXIES must be 0 or more (the number of proxies in front of the app)")
