"""SQLite storage (plain sqlite3) with a versioned schema: one connection per request on ``g``.

The database file lives in the instance folder. Migrations are applied in order on start-up; the
``user_version`` pragma records the schema version.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import click
from flask import Flask, current_app, g

from core.triage import APPOINTMENT, NEXT_STEPS, Decision, decide


def _decisions_carry_uncertain(con: sqlite3.Connection) -> None:
    """Every stored check gets a decision that carries its "uncertain" flag; a check shown as uncertain is never
    left with the calm advice (the contradiction of issue 32 is corrected in the history too); checks stored
    before decisions were get theirs from their probabilities (no operating point was recorded for them)."""
    rows = con.execute("SELECT id, probs, uncertain, decision FROM detections").fetchall()
    for row_id, probs, uncertain, raw in rows:
        if raw is None:
            decision = decide(json.loads(probs), None, uncertain=bool(uncertain)).to_dict()
        else:
            decision = {**json.loads(raw), "uncertain": bool(uncertain)}
            if uncertain and decision["urgency"] < APPOINTMENT:
                decision["urgency"] = APPOINTMENT
            decision["next_step"] = NEXT_STEPS[decision["urgency"]]
        Decision.from_dict(decision)  # every stored decision reads back, or the migration stops here
        con.execute("UPDATE detections SET decision = ? WHERE id = ?", (json.dumps(decision), row_id))


MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: accounts, detections, API tokens
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name TEXT NOT NULL DEFAULT '',
        password_hash TEXT NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0,
        session_token TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE detections (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        image_key TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
        model_version TEXT NOT NULL,
        top_class TEXT NOT NULL,
        confidence REAL NOT NULL,
        probs TEXT NOT NULL,
        uncertain INTEGER NOT NULL
    );
    CREATE INDEX detections_user ON detections(user_id, created_at);
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    """,
    # 2: where on the body and a note, so one lesion's checks can be followed over time
    """
    ALTER TABLE detections ADD COLUMN body_site TEXT NOT NULL DEFAULT '';
    ALTER TABLE detections ADD COLUMN note TEXT NOT NULL DEFAULT '';
    CREATE INDEX detections_site ON detections(user_id, body_site, created_at);
    """,
    # 3: the screening decision made at check time (operating point, urgency), so the advice shown later is the
    # one given then, whatever model is deployed now
    """
    ALTER TABLE detections ADD COLUMN decision TEXT;
    """,
    # 4: the photo-quality feedback given at check time (blur, glare, exposure), shown with the result
    """
    ALTER TABLE detections ADD COLUMN quality TEXT;
    """,
    # 5: decisions carry "uncertain" (never with the calm advice); every check has a decision
    _decisions_carry_uncertain,
    # 6: whether the photo check (the model's gate) looked at the picture; not recorded before, so not claimed
    """
    ALTER TABLE detections ADD COLUMN photo_checked INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: the patient's own name for the spot (one lesion followed over time; a body site holds several moles)
    """
    ALTER TABLE detections ADD COLUMN spot TEXT NOT NULL DEFAULT '';
    CREATE INDEX detections_spot ON detections(user_id, spot, created_at);
    """,
    # 8: checks stored before the photo-quality feedback existed say so ("measured": false) instead of holding
    # NULL: every row reads back the same way
    """
    UPDATE detections SET quality = '{"issues": [], "measured": false}' WHERE quality IS NULL;
    """,
    # 9: the table is named for what it holds, a patient's checks, as the pages, routes and classes say
    """
    ALTER TABLE detections RENAME TO checks;
    DROP INDEX detections_user;
    DROP INDEX detections_site;
    DROP INDEX detections_spot;
    CREATE INDEX checks_user ON checks(user_id, created_at);
    CREATE INDEX checks_site ON checks(user_id, body_site, created_at);
    CREATE INDEX checks_spot ON checks(user_id, spot, created_at);
    """,
    # 10: the age and sex a patient gave, kept only when the model's answer used them (metadata late fusion)
    """
    ALTER TABLE checks ADD COLUMN age INTEGER;
    ALTER TABLE checks ADD COLUMN sex TEXT NOT NULL DEFAULT '';
    """,
]


def database_path(app: Flask) -> Path:
    return Path(app.instance_path) / "lesionlite.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, detect_types=sqlite3.PARSE_DECLTYPES, timeout=30)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA journal_mode = WAL")
    return con


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = connect(database_path(current_app))
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def migrate(path: Path) -> int:
    """Apply pending migrations; returns the schema version."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only from the first byte
    path.chmod(0o600)
    # gunicorn boots its workers at once: without a lock two of them switch a new file to WAL or run the same
    # migration together, and one dies with "database is locked" (the worker then fails to boot).
    lock_path = path.with_name(path.name + ".lock")
    with os.fdopen(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        con = connect(path)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                with con:
                    if callable(sql):
                        sql(con)
                    else:
                        con.executescript(sql)
                    con.execute(f"PRAGMA user_version = {number}")
            return con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()


@click.command("init-db")
def init_db_command() -> None:
    """Create or migrate the database in the instance folder."""
    version = migrate(database_path(current_app))
    click.echo(f"database ready: {database_path(current_app)} (schema {version})")


def init_app(app: Flask) -> None:
    migrate(database_path(app))
    app.teardown_appcontext(close_db)
    app.cli.add_command(init_db_command)
