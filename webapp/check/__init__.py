"""CheckResult: upload an image, see the result, browse and delete the history."""

from webapp.check.routes import bp  # the blueprint is defined with its views

__all__ = ["bp"]
