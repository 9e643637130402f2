"""Error pages: a clear message for people, JSON for the API."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please log in.",
    403: "You are not allowed to do that.",
    404: "Not found.",
    405: "That method is not allowed here.",
    413: "The file is too large. The limit is {limit} MB.",
    429: "Too many attempts. Please wait a minute and try again.",
    500: "Something went wrong on our side.",
}


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _render(400, "The form expired or was not sent from this site. Please reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        message = MESSAGES.get(code, exc.description or "Error").format(
            limit=app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024))
        return _render(code, message)


def _render(code: int, message: str):
    if request.path.startswith("/api/"):
        return jsonify({"error": message}), code
    if request_ctx.url_adapter is None:  # refused before routing (an untrusted Host): no links can be built
        return Response(f"{code}: {message}\n", status=code, mimetype="text/plain")
    return render_template("errors/error.html", code=code, message=message), code
