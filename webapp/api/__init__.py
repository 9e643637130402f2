"""JSON API for mobile clients: ``POST /api/v1/predict`` with ``Authorization: Bearer <token>``."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from core.classes import clinical_name
from core.errors import LesionLiteError
from core.imaging import ImageRejected
from core.live import DISCLAIMER
from webapp.auth.routes import api_user
from webapp.db import get_db
from webapp.detect.routes import store_detection
from webapp.extensions import csrf, limiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # token-authenticated, no cookies: CSRF does not apply


def _error(status: int, message: str):  # noqa: ANN202
    return jsonify({"error": message}), status


@bp.route("/predict", methods=["POST"])
@limiter.limit(lambda: current_app.config["RATELIMIT_API"])
def predict():  # noqa: ANN201
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = api_user(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if user is None:
        return _error(401, "missing or invalid API token")
    if not user.verified:
        return _error(403, "confirm your email address before using detection")
    upload = request.files.get("image")
    if upload is None:
        return _error(400, "send the image as multipart form field 'image'")
    try:
        detection_id = store_detection(user.id, upload.read())
    except ImageRejected as exc:
        return _error(400, f"this file cannot be used: {exc}")
    except LesionLiteError as exc:
        current_app.logger.error("prediction failed: %s", exc)
        return _error(503, "the model is not available")
    row = get_db().execute("SELECT * FROM detections WHERE id = ?", (detection_id,)).fetchone()
    return jsonify({"id": detection_id, "prediction": row["top_class"],
                    "clinical_name": clinical_name(row["top_class"]), "confidence": row["confidence"],
                    "probabilities": json.loads(row["probs"]), "uncertain": bool(row["uncertain"]),
                    "model_version": row["model_version"],
                    "disclaimer": DISCLAIMER})
