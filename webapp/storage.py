"""Uploaded images: stored re-encoded (EXIF stripped) under a random key in the instance folder, outside static/.

The folder is owner-only (0700, files 0600). A file and its check row are written so that neither
outlives the other: the file is written under a temporary name, the row inserted, the file renamed into
place inside the same transaction (a failed rename rolls the row back), and on start-up files without a
row (a crash between the two) are removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app

from webapp.db import connect, database_path, get_db

log = logging.getLogger(__name__)


def upload_dir(instance_path: str | None = None) -> Path:
    path = Path(instance_path or current_app.instance_path) / "uploads"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def image_path(key: str) -> Path:
    if not key.isalnum():
        raise ValueError("bad image key")
    return upload_dir() / f"{key}.jpg"


def store_with_row(jpeg: bytes, insert_row: Callable[[sqlite3.Connection, str], None]) -> str:
    """Write ``jpeg`` and, in one transaction, ``insert_row(db, key)``; neither is kept without the other."""
    key = secrets.token_hex(16)
    final = image_path(key)
    tmp = final.with_suffix(".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(jpeg)
    db = get_db()
    try:
        with db:  # commits only if the rename succeeded
            insert_row(db, key)
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def delete_image(key: str) -> None:
    image_path(key).unlink(missing_ok=True)


def remove_orphans(app: Flask) -> int:
    """Delete upload files that no check row refers to (left by a crash); returns how many."""
    folder = upload_dir(app.instance_path)
    con = connect(database_path(app))
    try:
        keys = {row[0] for row in con.execute("SELECT image_key FROM checks")}
    finally:
        con.close()
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and (path.suffix == ".part" or path.stem not in keys):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d upload file(s) without a check row (left by an interrupted upload)", removed)
    return removed


def init_app(app: Flask) -> None:
    folder = upload_dir(app.instance_path)
    folder.chmod(0o700)
    Path(app.instance_path).chmod(0o700)  # the database and images: owner-only, also in a folder made earlier
    remove_orphans(app)
