"""The Flask extensions, created once and bound to an app in :func:`webapp.create_app`."""

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mail import Mail
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
mail = Mail()
limiter = Limiter(key_func=get_remote_address)


def configured_limit(name: str) -> str:
    """A rate limit from the app's config (read per request, so each app of a process keeps its own)."""
    return current_app.config[name]
