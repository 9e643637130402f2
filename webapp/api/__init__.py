"""JSON API for mobile clients: ``POST /api/v1/predict`` with ``Authorization: Bearer <token>``.

Multipart fields: ``image`` (required); ``age`` (years), ``sex`` (female, male) and ``body_site`` (the site's list),
each optional: a model that carries metadata fusion uses them, and ``metadata_used`` in the answer says which."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from core.errors import ConfigError
from core.fusion import PatientMetadata
from core.serve.imaging import ImageRejected
from core.triage import DISCLAIMER
from webapp import checks, tokens
from webapp.check.forms import BODY_SITE_NAMES, patient_metadata
from webapp.extensions import csrf, limiter
from webapp.predictor import ModelUnavailable, NotALesion

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # token-authenticated, no cookies: CSRF does not apply


def _error(status: int, message: str):
    return jsonify({"error": message}), status


@bp.route("/predict", methods=["POST"])
@limiter.limit(lambda: current_app.config["RATELIMIT_API"])
def predict():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = tokens.owner(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if user is None:
        return _error(401, "missing or invalid API token")
    if not user.verified:
        return _error(403, "confirm your email address before checking images")
    upload = request.files.get("image")
    if upload is None:
        return _error(400, "send the image as multipart form field 'image'")
    body_site = request.form.get("body_site", "").strip().lower()
    if body_site not in BODY_SITE_NAMES:
        return _error(400, f"unknown body_site {body_site!r}; allowed: {', '.join(s for s in BODY_SITE_NAMES if s)}")
    try:
        said = PatientMetadata.parse(age=request.form.get("age"), sex=request.form.get("sex"))
    except ConfigError as exc:
        return _error(400, str(exc))
    metadata = patient_metadata(age=said.age, sex=said.sex or "", body_site=body_site)
    try:
        check_id, result = checks.create(user.id, upload.read(), body_site=body_site, metadata=metadata)
    except ImageRejected as exc:
        return _error(400, f"this file cannot be used: {exc}")
    except NotALesion as exc:  # a distinct, machine-readable answer: the client must not show a class
        # Which test refused it stays in the log: telling the sender would show an attacker what to change.
        current_app.logger.info("photo check refused an upload (%s)", exc.reason)
        return jsonify({"error": str(exc), "code": "not_a_lesion"}), 422
    except ModelUnavailable as exc:
        current_app.logger.error("prediction failed: %s", exc)
        return _error(503, "the model is not available")
    except checks.StorageFull:
        current_app.logger.error("storage full: MAX_CHECKS_TOTAL checks are stored")
        return _error(503, "the site cannot store more checks right now; please try again later")
    except checks.AccountGone:
        return _error(401, "missing or invalid API token")
    decision = result.decision
    screening = {"possibly_malignant_probability": decision.malignant_probability,
                 "melanoma_probability": decision.melanoma_probability,
                 "refer": decision.refer, "refer_melanoma": decision.refer_melanoma, "next_step": decision.next_step,
                 "operating_point": result.triage.to_dict() if result.triage else None}
    return jsonify({"id": check_id, "prediction": result.top_class, "clinical_name": result.clinical_name,
                    "confidence": result.confidence, "probabilities": result.probs, "uncertain": result.uncertain,
                    "screening": screening, "photo_quality": {**result.quality.as_dict(), "advice": [
                        i.message for i in result.quality.issues]},
                    "metadata_used": list(result.answer.metadata_used),
                    "model_version": result.model_version, "disclaimer": DISCLAIMER})
