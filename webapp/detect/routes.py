"""Detection views; every detection is visible to its owner only (others get 404)."""

from __future__ import annotations

import json
import secrets
from functools import wraps

from flask import abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required

from core.classes import CLASSES, clinical_name
from core.imaging import ImageRejected, check_image, reencode_jpeg
from core.live import DISCLAIMER
from webapp.auth.forms import ConfirmForm
from webapp.db import get_db
from webapp.detect import bp
from webapp.detect.forms import UploadForm
from webapp.extensions import limiter
from webapp.predictor import Detection, ModelUnavailable, detect, detection_json
from webapp.storage import delete_image, image_path, store_with_row

MODEL_UNAVAILABLE = "The model is not available right now. Please try again later."


def verified_required(view):  # noqa: ANN001, ANN201
    @wraps(view)
    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not current_user.verified:
            flash("Please confirm your email address first (we can send the link again from your profile).")
            return redirect(url_for("auth.profile"))
        return view(*args, **kwargs)

    return wrapped


def store_detection(user_id: int, data: bytes) -> tuple[str, Detection]:
    """Validate, re-encode, predict and store; returns the detection id and result.

    Raises:
        ImageRejected: the upload is not a usable image.
        ModelUnavailable: no model can be loaded.
    """
    checked = check_image(data)
    result = detect(checked)
    detection_id = secrets.token_urlsafe(12)

    def insert(db, key: str) -> None:  # noqa: ANN001
        db.execute("INSERT INTO detections (id, user_id, image_key, model_version, top_class, confidence, probs, "
                   "uncertain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (detection_id, user_id, key, result.model_version, result.top_class, result.confidence,
                    detection_json(result), int(result.uncertain)))

    store_with_row(reencode_jpeg(checked.image), insert)
    return detection_id, result


def get_detection(detection_id: str):  # noqa: ANN201
    """The current user's detection, or 404 (also when it belongs to someone else)."""
    row = get_db().execute("SELECT * FROM detections WHERE id = ? AND user_id = ?",
                           (detection_id, current_user.id)).fetchone()
    if row is None:
        abort(404)
    return row


@bp.route("/", methods=["GET", "POST"])
@login_required
@verified_required
@limiter.limit(lambda: current_app.config["RATELIMIT_UPLOAD"], methods=["POST"])
def upload():  # noqa: ANN201
    form = UploadForm()
    if request.method == "POST" and "image" not in request.files and form.is_submitted():
        form.image.errors = ["Choose an image to upload (form field 'image')."]
        return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 400
    if form.validate_on_submit():
        try:
            detection_id, _ = store_detection(current_user.id, form.image.data.read())
        except ImageRejected as exc:
            form.image.errors = [f"This file cannot be used: {exc}."]
            return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 400
        except ModelUnavailable as exc:
            current_app.logger.error("prediction failed: %s", exc)
            form.image.errors = [MODEL_UNAVAILABLE]
            return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 503
        return redirect(url_for("detect.result", detection_id=detection_id))
    status = 400 if form.errors else 200
    return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), status


@bp.route("/result/<detection_id>")
@login_required
def result(detection_id: str):  # noqa: ANN201
    row = get_detection(detection_id)
    probs = json.loads(row["probs"])
    bars = sorted(((clinical_name(c), probs[c]) for c in CLASSES), key=lambda x: -x[1])
    return render_template("detect/result.html", d=row, name=clinical_name(row["top_class"]), bars=bars,
                           disclaimer=DISCLAIMER, confirm=ConfirmForm())


@bp.route("/image/<detection_id>")
@login_required
def image(detection_id: str):  # noqa: ANN201
    row = get_detection(detection_id)
    response = send_file(image_path(row["image_key"]), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/history")
@login_required
def history():  # noqa: ANN201
    page = request.args.get("page", 1, type=int)
    size = current_app.config["HISTORY_PAGE_SIZE"]
    db = get_db()
    total = db.execute("SELECT count(*) FROM detections WHERE user_id = ?", (current_user.id,)).fetchone()[0]
    if not 1 <= page <= max(1, -(-total // size)):  # also keeps OFFSET within SQLite's integer range
        abort(404)
    rows = db.execute("SELECT * FROM detections WHERE user_id = ? ORDER BY created_at DESC, rowid DESC "
                      "LIMIT ? OFFSET ?", (current_user.id, size, (page - 1) * size)).fetchall()
    pages = max(1, -(-total // size))
    return render_template("detect/history.html", rows=rows, page=page, pages=pages, total=total,
                           names={c: clinical_name(c) for c in CLASSES}, confirm=ConfirmForm())


@bp.route("/delete/<detection_id>", methods=["POST"])
@login_required
def delete(detection_id: str):  # noqa: ANN201
    if not ConfirmForm().validate_on_submit():
        abort(400)
    row = get_detection(detection_id)
    db = get_db()
    with db:
        db.execute("DELETE FROM detections WHERE id = ? AND user_id = ?", (detection_id, current_user.id))
    delete_image(row["image_key"])  # after the row: a crash in between leaves a file the start-up check removes
    flash("Deleted.")
    return redirect(url_for("detect.history"))
