"""Exceptions that carry a one-line, user-facing message.

CLIs catch :class:`LesionLiteError` and print ``error: <message>`` instead of a traceback.
"""


class LesionLiteError(Exception):
    """Base class for errors caused by user input (data, config, arguments)."""


class DatasetError(LesionLiteError):
    """The dataset on disk is missing, malformed or inconsistent."""


class ConfigError(LesionLiteError):
    """A configuration file or flag is invalid."""


class ModelError(LesionLiteError):
    """A model name, checkpoint or weights download is invalid or unavailable."""
