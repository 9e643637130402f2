"""The signed-in account: profile, API tokens, data export, deleting the account."""

from webapp.account.routes import bp  # the blueprint is defined with its views

__all__ = ["bp"]
