"""Detection views; every detection is visible to its owner only (others get 404)."""

from __future__ import annotations

import json
import sqlite3
from functools import wraps

from flask import abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required

from core.classes import CLASSES, clinical_name
from core.serve.imaging import ImageRejected
from core.serve.predict import DISCLAIMER
from webapp import detections
from webapp.auth.forms import ConfirmForm
from webapp.detect import bp
from webapp.detect.forms import UploadForm
from webapp.extensions import limiter
from webapp.predictor import ModelUnavailable, NotALesion
from webapp.storage import image_path

MODEL_UNAVAILABLE = "The model is not available right now. Please try again later."


def verified_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.verified:
            flash("Please confirm your email address first (we can send the link again from your profile).")
            return redirect(url_for("auth.profile"))
        return view(*args, **kwargs)

    return wrapped


def get_detection(detection_id: str) -> sqlite3.Row:
    """The current user's detection, or 404 (also when it belongs to someone else)."""
    row = detections.owned(current_user.id, detection_id)
    if row is None:
        abort(404)
    return row


@bp.route("/", methods=["GET", "POST"])
@login_required
@verified_required
@limiter.limit(lambda: current_app.config["RATELIMIT_UPLOAD"], methods=["POST"])
def upload():
    form = UploadForm()
    if request.method == "POST" and "image" not in request.files and form.is_submitted():
        form.image.errors = ["Choose an image to upload (form field 'image')."]
        return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 400
    if form.validate_on_submit():
        try:
            detection_id, _ = detections.create(current_user.id, form.image.data.read())
        except ImageRejected as exc:
            form.image.errors = [f"This file cannot be used: {exc}."]
            return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 400
        except NotALesion as exc:
            form.image.errors = [str(exc)]
            return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 422
        except ModelUnavailable as exc:
            current_app.logger.error("prediction failed: %s", exc)
            form.image.errors = [MODEL_UNAVAILABLE]
            return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), 503
        return redirect(url_for("detect.result", detection_id=detection_id))
    status = 400 if form.errors else 200
    return render_template("detect/upload.html", form=form, disclaimer=DISCLAIMER), status


@bp.route("/result/<detection_id>")
@login_required
def result(detection_id: str):
    row = get_detection(detection_id)
    probs = json.loads(row["probs"])
    bars = sorted(((clinical_name(c), probs[c]) for c in CLASSES), key=lambda x: -x[1])
    return render_template("detect/result.html", d=row, name=clinical_name(row["top_class"]), bars=bars,
                           disclaimer=DISCLAIMER, confirm=ConfirmForm())


@bp.route("/image/<detection_id>")
@login_required
def image(detection_id: str):
    row = get_detection(detection_id)
    response = send_file(image_path(row["image_key"]), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/history")
@login_required
def history():
    page = request.args.get("page", 1, type=int)
    size = current_app.config["HISTORY_PAGE_SIZE"]
    total = detections.count(current_user.id)
    if not 1 <= page <= max(1, -(-total // size)):  # also keeps OFFSET within SQLite's integer range
        abort(404)
    rows = detections.page(current_user.id, number=page, size=size)
    pages = max(1, -(-total // size))
    return render_template("detect/history.html", rows=rows, page=page, pages=pages, total=total,
                           names={c: clinical_name(c) for c in CLASSES}, confirm=ConfirmForm())


@bp.route("/delete/<detection_id>", methods=["POST"])
@login_required
def delete(detection_id: str):
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if not detections.delete(current_user.id, detection_id):
        abort(404)
    flash("Deleted.")
    return redirect(url_for("detect.history"))
