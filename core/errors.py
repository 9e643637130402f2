"""Exceptions that carry a one-line, user-facing message.

CLIs catch :class:`LesionLiteError` and print ``error: <message>`` instead of a traceback.
"""

from collections.abc import Iterable


class LesionLiteError(Exception):
    """Base class for errors caused by user input (data, config, arguments)."""


class DatasetError(LesionLiteError):
    """The dataset on disk is missing, malformed or inconsistent."""


class ConfigError(LesionLiteError):
    """A configuration file or flag is invalid."""


class ModelError(LesionLiteError):
    """A model name, checkpoint or weights download is invalid or unavailable."""


def check_allowed(value: object, allowed: Iterable[object], *, what: str) -> None:
    """A :class:`ConfigError` naming ``what`` and listing the allowed values unless ``value`` is one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")
