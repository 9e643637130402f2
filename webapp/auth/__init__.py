"""Signing in: register, verify email, log in and out, reset a forgotten password."""

from webapp.auth.routes import bp  # the blueprint is defined with its views

__all__ = ["bp"]
