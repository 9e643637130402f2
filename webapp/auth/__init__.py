"""Accounts: register, verify email, log in/out, reset password, profile, API tokens, delete account."""

from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from webapp.auth import routes  # noqa: E402,F401 - registers the views on bp
