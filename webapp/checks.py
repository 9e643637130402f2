"""Checks: the SQL of the checks table, and storing a new one with its image (owner-only access)."""

from __future__ import annotations

import json
import secrets
import sqlite3

from flask import current_app

from core.classes import clinical_name
from core.errors import LesionLiteError
from core.fusion import PatientMetadata
from core.serve.imaging import ImageRejected, check_image, reencode_jpeg
from webapp.db import get_db
from webapp.predictor import CheckResult, check_upload, decision_json, probs_json, quality_json
from webapp.storage import delete_image, store_with_row


class StorageFull(LesionLiteError):
    """The site keeps as many checks as its operator allows (``MAX_CHECKS_TOTAL``); nothing was stored."""


class AccountGone(LesionLiteError):
    """The account was deleted while its upload was being checked; nothing was stored."""


def _quota_problem(user_id: int) -> str | None:
    stored = get_db().execute("SELECT count(*) FROM checks WHERE user_id = ?", (user_id,)).fetchone()[0]
    if stored >= current_app.config["MAX_CHECKS_PER_ACCOUNT"]:
        return (f"this account already keeps {stored} checks, the most it can store; delete some older ones on the "
                "History page first")
    return None


def create(user_id: int, data: bytes, *, body_site: str = "", note: str = "", spot: str = "",
           metadata: PatientMetadata | None = None) -> tuple[str, CheckResult]:
    """Validate, re-encode, predict and store (with where on the body, the spot's name and a note); returns the id
    and result. ``metadata`` (age, sex, body site) is fused when the model carries a fusion; the age and sex are
    kept only then.

    Raises:
        ImageRejected: the upload is not a usable image, or the account keeps as many checks as it may.
        NotALesion: the model's gate judged it not a lesion photo (nothing is stored).
        ModelUnavailable: no model can be loaded.
        StorageFull: the site keeps as many checks as it may, all accounts together.
        AccountGone: the account was deleted meanwhile.
    """
    problem = _quota_problem(user_id)  # early, before the model's work; checked again in the insert itself
    if problem:
        raise ImageRejected(problem)
    checked = check_image(data)
    result = check_upload(checked, metadata)
    used = result.metadata or PatientMetadata()
    age = round(used.age) if used.age is not None else None
    check_id = secrets.token_urlsafe(12)

    def insert(db: sqlite3.Connection, key: str) -> None:
        # The limits are checked in the statement that inserts (one transaction): two concurrent uploads cannot
        # both pass a count taken before either was stored.
        inserted = db.execute(
            "INSERT INTO checks (id, user_id, image_key, model_version, top_class, confidence, probs, "
            "uncertain, body_site, note, decision, quality, photo_checked, spot, age, sex) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
            "WHERE (SELECT count(*) FROM checks WHERE user_id = ?) < ? "
            "AND (SELECT count(*) FROM checks) < ?",
            (check_id, user_id, key, result.model_version, result.top_class, result.confidence,
             probs_json(result), int(result.uncertain), body_site, note.strip(), decision_json(result),
             quality_json(result), int(result.photo_checked), normalise_spot(spot), age, used.sex or "", user_id,
             current_app.config["MAX_CHECKS_PER_ACCOUNT"],
             current_app.config["MAX_CHECKS_TOTAL"])).rowcount
        if not inserted:
            problem = _quota_problem(user_id)
            if problem:
                raise ImageRejected(problem)
            raise StorageFull("the site keeps as many checks as it can store")

    try:
        store_with_row(reencode_jpeg(checked.image), insert)
    except sqlite3.IntegrityError:  # the user row is gone (account deleted meanwhile): the image is not kept
        raise AccountGone("the account no longer exists") from None
    return check_id, result


def owned(user_id: int, check_id: str) -> sqlite3.Row | None:
    """The user's check, or None (also when it belongs to someone else)."""
    return get_db().execute("SELECT * FROM checks WHERE id = ? AND user_id = ?",
                            (check_id, user_id)).fetchone()


def export(user_id: int) -> list[tuple[dict[str, object], str]]:
    """Every check of the user, oldest first, as (what is stored about it, its image key): the data export."""
    rows = get_db().execute("SELECT * FROM checks WHERE user_id = ? ORDER BY created_at, rowid",
                            (user_id,)).fetchall()
    return [({"id": r["id"], "created_at": _utc_iso(r["created_at"]), "model": r["model_version"],
              "top_class": r["top_class"], "diagnosis": clinical_name(r["top_class"]), "confidence": r["confidence"],
              "probabilities": {f"{clinical_name(c)} ({c})": p for c, p in json.loads(r["probs"]).items()},
              "uncertain": bool(r["uncertain"]), "body_site": r["body_site"], "age": r["age"], "sex": r["sex"],
              "spot": r["spot"], "note": r["note"], "decision": json.loads(r["decision"]),
              "photo_quality": json.loads(r["quality"]),
              "photo_checked": bool(r["photo_checked"]), "photo": f"photos/{r['id']}.jpg"},
             r["image_key"]) for r in rows]


def _utc_iso(stored: str) -> str:
    """SQLite's CURRENT_TIMESTAMP ("2026-12-04 05:30:00", UTC) as ISO 8601 with its time zone."""
    return stored.replace(" ", "T") + "+00:00" if stored and "T" not in stored else stored


EXPORT_README = """Your LesionLite data
====================

checks.json holds your address, your name and every check you kept, oldest first. For each check:
  id             the check's identifier on the site
  created_at     when it was made (ISO 8601, UTC)
  diagnosis      the model's most likely class, in words (top_class: its short code)
  confidence     the model's calibrated probability of that class (0 to 1)
  probabilities  every class's calibrated probability
  uncertain      whether the result was shown as uncertain
  decision       the next step you were advised and the screening thresholds behind it
  photo_quality  the photo-quality check (blur, glare, exposure); "measured": false for checks made before it
                 existed
  photo_checked  whether the photo check (is this a skin-lesion photo?) looked at the picture
  body_site, spot, note  what you entered (spot: your name for the lesion)
  age, sex       what you said about yourself, kept only when the model's answer used it (else empty);
                 decision.metadata_used names what it used
  photo          the file of the photo in this archive (photos/)

LesionLite is research software, not a medical device: nothing here is a diagnosis.
"""


def count(user_id: int) -> int:
    return get_db().execute("SELECT count(*) FROM checks WHERE user_id = ?", (user_id,)).fetchone()[0]


def page(user_id: int, *, number: int, size: int) -> list[sqlite3.Row]:
    """One page of the user's checks, newest first (``number`` from 1; the caller checks the range)."""
    return get_db().execute("SELECT * FROM checks WHERE user_id = ? ORDER BY created_at DESC, rowid DESC "
                            "LIMIT ? OFFSET ?", (user_id, size, (number - 1) * size)).fetchall()


def same_spot(user_id: int, row: sqlite3.Row, *, limit: int = 20) -> list[sqlite3.Row]:
    """The user's other checks of the spot this one shows (the name the patient gave it), newest first; none when
    the spot is not named. A body site alone is not a lesion: the back holds many moles."""
    if not row["spot"]:
        return []
    return get_db().execute("SELECT * FROM checks WHERE user_id = ? AND spot = ? AND id != ? "
                            "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                            (user_id, row["spot"], row["id"], limit)).fetchall()


def spots(user_id: int) -> list[str]:
    """The spot names the user has given, most recently used first (offered on the next upload)."""
    rows = get_db().execute("SELECT spot FROM checks WHERE user_id = ? AND spot != '' GROUP BY spot "
                            "ORDER BY max(created_at) DESC, max(rowid) DESC", (user_id,)).fetchall()
    return [r["spot"] for r in rows]


def name_spot(user_id: int, check_id: str, spot: str) -> bool:
    """Say which spot the user's check shows (empty: none); False when the check is not the user's."""
    with get_db() as db:
        return db.execute("UPDATE checks SET spot = ? WHERE id = ? AND user_id = ?",
                          (normalise_spot(spot), check_id, user_id)).rowcount == 1


def normalise_spot(spot: str) -> str:
    """One spelling per name: surrounding and repeated spaces dropped ("Mole  left arm " = "Mole left arm")."""
    return " ".join(spot.split())


def delete(user_id: int, check_id: str) -> bool:
    """Delete the row, then its image (a crash in between leaves a file the start-up check removes)."""
    row = owned(user_id, check_id)
    if row is None:
        return False
    db = get_db()
    with db:
        db.execute("DELETE FROM checks WHERE id = ? AND user_id = ?", (check_id, user_id))
    delete_image(row["image_key"])
    return True
