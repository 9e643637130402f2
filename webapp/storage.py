"""Uploaded images: stored re-encoded (EXIF stripped) under a random key in the instance folder, outside static/."""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import current_app

from webapp.db import get_db


def upload_dir() -> Path:
    path = Path(current_app.instance_path) / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_image(jpeg: bytes) -> str:
    key = secrets.token_hex(16)
    (upload_dir() / f"{key}.jpg").write_bytes(jpeg)
    return key


def image_path(key: str) -> Path:
    if not key.isalnum():
        raise ValueError("bad image key")
    return upload_dir() / f"{key}.jpg"


def delete_image(key: str) -> None:
    image_path(key).unlink(missing_ok=True)


def delete_user_files(user_id: int) -> None:
    for row in get_db().execute("SELECT image_key FROM detections WHERE user_id = ?", (user_id,)):
        delete_image(row["image_key"])
