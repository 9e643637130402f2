"""Accounts: register, verify email, log in/out, reset password, profile, API tokens, delete account."""

from webapp.auth.routes import bp  # the blueprint is defined with its views

__all__ = ["bp"]
