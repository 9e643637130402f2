"""A patient's checks: upload, result, report, history, delete; every check is visible to its owner only (others
get 404)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from functools import wraps

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required

from core.classes import (
    CLASSES,
    PLAIN_DESCRIPTIONS,
    clinical_name,
    is_possibly_malignant,
)
from core.serve.facts import ModelFacts
from core.serve.imaging import ImageRejected
from core.serve.quality import ADVICE as QUALITY_ADVICE
from core.triage import APPOINTMENT, DISCLAIMER, NEXT_STEPS_SHORT, URGENT, WATCH, Decision
from webapp import checks
from webapp.auth.forms import ConfirmForm
from webapp.check.forms import BODY_SITE_NAMES, SpotForm, UploadForm, patient_metadata
from webapp.extensions import limiter
from webapp.predictor import ModelUnavailable, NotALesion
from webapp.storage import image_path

bp = Blueprint("check", __name__, url_prefix="/check")

URGENCY_CLASS = {URGENT: "urgent", APPOINTMENT: "appointment", WATCH: "watch"}  # history colours (style.css)
METADATA_NAMES = {"age": "your age", "sex": "your sex", "localization": "the body site"}  # as a result page says
MODEL_UNAVAILABLE = "The model is not available right now. Please try again later."


@bp.app_template_filter("plain_model")
def plain_model(label: str) -> str:
    """A stored check's model label ("<architecture> <variant> (<run id>)") as a patient reads it."""
    match = re.fullmatch(r"(\S+) (\S+) \((.+)\)", str(label))
    if not match:
        return str(label)
    facts = ModelFacts(f"{match[1]} {match[2]}", match[3], "", None, None, None)
    return f"{facts.plain_name}, version {facts.short_version}"


@bp.app_template_filter("when")
def when(stamp: str) -> str:
    """SQLite's UTC timestamp as a short date, e.g. '27 Nov 2026, 10:20 UTC' (one line on a phone)."""
    try:
        return datetime.fromisoformat(stamp).strftime("%-d %b %Y, %H:%M UTC")
    except (TypeError, ValueError):
        return str(stamp)


@dataclass(frozen=True)
class Bar:
    name: str
    p: float
    malignant: bool


@dataclass(frozen=True)
class Verdict:
    """What the result page says: the top class, whether the check is framed "possibly malignant" (the screening
    operating point refers it, or the top class is in the group), and the next step of the stored decision."""

    name: str
    malignant: bool
    description: str
    next_step: str
    malignant_total: float
    referred: bool  # the possibly-malignant operating point was reached
    urgent: bool
    top_malignant: bool  # the most likely class itself is in the possibly-malignant group


def stored_decision(row: sqlite3.Row) -> Decision:
    """The decision made when the check was stored (the site's migrations gave older checks theirs)."""
    return Decision.from_dict(json.loads(row["decision"]))


def explain(row: sqlite3.Row) -> tuple[Verdict, list[Bar]]:
    probs = json.loads(row["probs"])
    top = row["top_class"]
    decision = stored_decision(row)
    bars = sorted((Bar(clinical_name(c), probs[c], is_possibly_malignant(c)) for c in CLASSES), key=lambda b: -b.p)
    verdict = Verdict(clinical_name(top), is_possibly_malignant(top) or decision.refer, PLAIN_DESCRIPTIONS[top],
                      decision.next_step, decision.malignant_probability, decision.refer,
                      decision.urgency == URGENT, is_possibly_malignant(top))
    return verdict, bars


def quality_advice(row: sqlite3.Row) -> list[str]:
    """The photo-quality advice given when the check was made (none for checks stored before it existed: migration
    8 marked them not measured)."""
    return [QUALITY_ADVICE[code] for code in json.loads(row["quality"])["issues"] if code in QUALITY_ADVICE]


def render_check(template: str, row: sqlite3.Row, **context: object) -> str:
    """A page about one check: its verdict, probability bars, photo-quality advice, body site and the disclaimer."""
    verdict, bars = explain(row)
    used = [METADATA_NAMES[f] for f in json.loads(row["decision"]).get("metadata_used", []) if f in METADATA_NAMES]
    return render_template(template, d=row, v=verdict, bars=bars, disclaimer=DISCLAIMER,
                           quality=quality_advice(row), site_name=BODY_SITE_NAMES.get(row["body_site"], ""),
                           used=used, **context)


def render_upload(form: UploadForm, status: int = 200):
    max_mb = current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
    return render_template("check/upload.html", form=form, disclaimer=DISCLAIMER, max_mb=max_mb,
                           spots=checks.spots(current_user.id)), status


def verified_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.verified:
            flash("Please confirm your email address first (we can send the link again from your profile).")
            return redirect(url_for("account.profile"))
        return view(*args, **kwargs)

    return wrapped


def get_check(check_id: str) -> sqlite3.Row:
    """The current user's check, or 404 (also when it belongs to someone else)."""
    row = checks.owned(current_user.id, check_id)
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
        return render_upload(form, 400)
    if form.validate_on_submit():
        try:
            metadata = patient_metadata(age=form.age.data, sex=form.sex.data or "",
                                        body_site=form.body_site.data or "")
            check_id, _ = checks.create(current_user.id, form.image.data.read(),
                                        body_site=form.body_site.data or "", note=form.note.data or "",
                                        spot=form.spot.data or "", metadata=metadata)
        except ImageRejected as exc:
            form.image.errors = [f"This file cannot be used: {exc}."]
            return render_upload(form, 400)
        except NotALesion as exc:
            form.image.errors = [str(exc)]
            return render_upload(form, 422)
        except ModelUnavailable as exc:
            current_app.logger.error("prediction failed: %s", exc)
            form.image.errors = [MODEL_UNAVAILABLE]
            return render_upload(form, 503)
        except checks.StorageFull:
            current_app.logger.error("storage full: MAX_CHECKS_TOTAL checks are stored")
            form.image.errors = ["The site cannot store more checks right now. Please try again later."]
            return render_upload(form, 503)
        except checks.AccountGone:
            return redirect(url_for("auth.login"))
        return redirect(url_for("check.result", check_id=check_id))
    return render_upload(form, 400 if form.errors else 200)


@bp.route("/result/<check_id>")
@login_required
def result(check_id: str):
    row = get_check(check_id)
    return render_check("check/result.html", row, same_spot=checks.same_spot(current_user.id, row),
                        names={c: clinical_name(c) for c in CLASSES}, spot_form=SpotForm(spot=row["spot"]),
                        spots=checks.spots(current_user.id))


@bp.route("/spot/<check_id>", methods=["POST"])
@login_required
def name_spot(check_id: str):
    """Say which spot a check shows (after the upload, or to correct it): its photos line up with that spot's."""
    row = get_check(check_id)
    form = SpotForm()
    if form.validate_on_submit():
        checks.name_spot(current_user.id, row["id"], form.spot.data or "")
        flash("Saved: this check shows " + (f"“{checks.normalise_spot(form.spot.data)}”." if form.spot.data
                                             else "no named spot."))
    else:
        flash("The spot's name was not saved: " + "; ".join(e for errs in form.errors.values() for e in errs),
              "error")
    return redirect(url_for("check.result", check_id=row["id"]))


@bp.route("/report/<check_id>")
@login_required
def report(check_id: str):
    """One check on one printable page (image, result, model card facts, date) to bring to a clinician."""
    return render_check("check/report.html", get_check(check_id))


@bp.route("/image/<check_id>")
@login_required
def image(check_id: str):
    row = get_check(check_id)
    response = send_file(image_path(row["image_key"]), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/history")
@login_required
def history():
    page = request.args.get("page", 1, type=int)
    size = current_app.config["HISTORY_PAGE_SIZE"]
    total = checks.count(current_user.id)
    if not 1 <= page <= max(1, -(-total // size)):  # also keeps OFFSET within SQLite's integer range
        abort(404)
    rows = checks.page(current_user.id, number=page, size=size)
    pages = max(1, -(-total // size))
    # each item is coloured and labelled by the next step it was given, not by its top class (colour follows risk)
    items = [(r, stored_decision(r).urgency) for r in rows]
    return render_template("check/history.html", items=items, page=page, pages=pages, total=total,
                           names={c: clinical_name(c) for c in CLASSES}, sites=BODY_SITE_NAMES,
                           urgency_class=URGENCY_CLASS, next_steps=NEXT_STEPS_SHORT)


@bp.route("/delete/<check_id>", methods=["GET"])
@login_required
def confirm_delete(check_id: str):
    """Deleting is for good: the history's Delete asks first, on its own page (works without JavaScript)."""
    row = get_check(check_id)
    return render_template("check/delete.html", d=row, name=clinical_name(row["top_class"]), confirm=ConfirmForm())


@bp.route("/delete/<check_id>", methods=["POST"])
@login_required
def delete(check_id: str):
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if not checks.delete(current_user.id, check_id):
        abort(404)
    flash("Deleted.")
    return redirect(url_for("check.history"))
