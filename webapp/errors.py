"""Error pages: a clear message for people, JSON for the API."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please log in.",
    403: "You are not allowed to do that.",
    404: "Not found.",
    405: "That method is not allowed here.",
    429: "Too many attempts. Please wait a minute and try again.",
    500: "Something went wrong on our side.",
}


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _render(400, "The form expired or was not sent from this site. Please reload the page and try again.")

    @app.errorhandler(RedisError)
    def limit_store_down(exc: RedisError):
        # Fail closed (no request goes unlimited), but say why in the log and answer 503, not a bare 500.
        app.logger.error("rate-limit store unreachable (RATELIMIT_STORAGE_URI): %s: requests that are rate "
                         "limited answer 503 until it is back", exc)
        return _render(503, "The service is temporarily unavailable. Please try again in a few minutes.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        if code == 413:
            return _render(413, too_large_message(app))
        return _render(code, MESSAGES.get(code, exc.description or "Error"))


def too_large_message(app: Flask) -> str:
    """Which limit a refused body hit: the whole upload's, or the form's (one field's size, the number of parts)."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    field = app.config.get("MAX_FORM_MEMORY_SIZE") or 500_000
    parts = app.config.get("MAX_FORM_PARTS") or 1000
    whole = f"The file is too large. The limit is {limit // (1024 * 1024)} MB."
    form = (f"The form is too large: a text field (such as the note) may hold at most {field // 1000} KB, and a form "
            f"at most {parts:,} parts.")
    if request.content_length is None:  # sent in chunks: which limit is not known
        return f"{whole} {form}"
    return whole if request.content_length > limit else form


def _render(code: int, message: str):
    if request.path.startswith("/api/"):
        return jsonify({"error": message}), code
    if request_ctx.url_adapter is None:  # refused before routing (an untrusted Host): no links can be built
        return Response(f"{code}: {message}\n", status=code, mimetype="text/plain")
    return render_template("errors/error.html", code=code, message=message), code
