"""Detection: upload an image, see the result, browse and delete the history."""

from flask import Blueprint

bp = Blueprint("detect", __name__, url_prefix="/detect")

from webapp.detect import routes  # noqa: E402,F401
