"""LesionLite web app for patients and clinicians (Flask app factory).

Run for development: ``make webapp``; production: ``gunicorn 'webapp:create_app()'`` with the
environment described in the README.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, request, url_for
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp import cli, db, errors, predictor, security, storage
from webapp import config as config_mod
from webapp.extensions import csrf, limiter, login_manager, mail
from webapp.request_body import DrainUnreadBody
from webapp.security import add_security_headers


def _init_extensions(app: Flask) -> None:
    db.init_app(app)
    csrf.init_app(app)
    mail.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.session_protection = "strong"
    # Flask-Login's identifier hashes the first X-Forwarded-For entry, which the client writes: a replayed cookie
    # with a forged entry passed, and a phone changing networks was logged out. The user agent alone is bound.
    login_manager._session_identifier_generator = security.session_identifier

    from webapp.users import load_session_user

    login_manager.user_loader(load_session_user)


def _register_blueprints(app: Flask) -> None:
    from webapp.account import bp as account_bp
    from webapp.api import bp as api_bp
    from webapp.auth import bp as auth_bp
    from webapp.check import bp as check_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(check_bp)
    app.register_blueprint(api_bp)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The app; ``test_config`` overrides the environment (and may set INSTANCE_PATH)."""
    instance = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("LESIONLITE_INSTANCE")
    app = Flask(__name__, instance_relative_config=True,
                instance_path=str(Path(instance).resolve()) if instance else None)
    settings = config_mod.from_environment("testing" if test_config else None)
    settings.update(test_config or {})
    if settings["ENV_NAME"] == "development" and not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = config_mod.development_secret(app.instance_path)
    app.config.from_mapping(settings)
    config_mod.check(app.config)
    app.config["TRUSTED_HOSTS"] = config_mod.trusted_hosts(app.config)  # other Host headers get 400
    if app.config["TRUSTED_PROXIES"]:
        # Client address and scheme from X-Forwarded-* set by exactly this many proxies; nothing else is believed.
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.wsgi_app = DrainUnreadBody(app.wsgi_app)  # type: ignore[method-assign]
    logging.getLogger("lesionlite").setLevel(logging.INFO)
    _init_extensions(app)
    _register_blueprints(app)
    errors.register(app)
    add_security_headers(app)
    predictor.init_app(app)
    storage.init_app(app)
    app.cli.add_command(cli.create_user_command)

    @app.before_request
    def refuse_oversized_bodies():  # before parsing: nothing of an oversized upload is spooled
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit and request.content_length and request.content_length > limit:
            abort(413)

    @app.route("/")
    def index():
        return redirect(url_for("check.upload" if current_user.is_authenticated else "auth.login"))

    @app.route("/detect/", defaults={"rest": ""})
    @app.route("/detect/<path:rest>")
    def moved(rest: str):  # the pages' address before they were named for checks: bookmarks keep working
        query = request.query_string.decode("ascii", "replace")
        return redirect(f"/check/{rest}" + (f"?{query}" if query else ""), code=301)

    return app
