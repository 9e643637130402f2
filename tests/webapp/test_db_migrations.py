"""The site's database migrations on rows of earlier schemas (no app, no model: plain sqlite3)."""

from __future__ import annotations

import json
from pathlib import Path

from core.triage import APPOINTMENT, WATCH, Decision, decide
from webapp import db


def _database_at(path: Path, version: int):
    con = db.connect(path)
    for number, sql in enumerate(db.MIGRATIONS[:version], start=1):
        with con:
            sql(con) if callable(sql) else con.executescript(sql)
            con.execute(f"PRAGMA user_version = {number}")
    return con


def test_stored_decisions_carry_uncertain_and_uncertain_checks_lose_the_calm_advice(tmp_path: Path) -> None:
    path = tmp_path / "site.sqlite"
    con = _database_at(path, 4)
    con.execute("INSERT INTO users (email, password_hash, session_token) VALUES ('a@example.org', 'x', 't')")
    calm = {"nv": 0.9, "bkl": 0.1, "mel": 0.0, "bcc": 0.0, "akiec": 0.0, "df": 0.0, "vasc": 0.0}
    old_decision = {k: v for k, v in decide(calm, None, uncertain=False).to_dict().items() if k != "uncertain"}
    rows = [("told-watch-uncertain", 1, json.dumps(old_decision)),
            ("told-watch-confident", 0, json.dumps(old_decision)), ("no-decision-uncertain", 1, None)]
    with con:
        for row_id, uncertain, decision in rows:
            con.execute("INSERT INTO detections (id, user_id, image_key, model_version, top_class, confidence, probs, "
                        "uncertain, decision) VALUES (?, 1, 'k', 'm', 'nv', 0.9, ?, ?, ?)",
                        (row_id, json.dumps(calm), uncertain, decision))
    con.close()
    assert db.migrate(path) == len(db.MIGRATIONS)
    con = db.connect(path)
    stored = {r["id"]: Decision.from_dict(json.loads(r["decision"])) for r in con.execute("SELECT * FROM checks")}
    assert stored["told-watch-uncertain"].uncertain and stored["told-watch-uncertain"].urgency == APPOINTMENT
    assert not stored["told-watch-confident"].uncertain and stored["told-watch-confident"].urgency == WATCH
    assert stored["no-decision-uncertain"].urgency == APPOINTMENT
    assert json.loads(con.execute("SELECT decision FROM checks WHERE id = 'told-watch-uncertain'").fetchone()[0])[
        "next_step"].startswith("Make an appointment")


def test_checks_stored_before_photo_quality_existed_say_it_was_not_measured(tmp_path: Path) -> None:
    from webapp.check.routes import quality_advice

    path = tmp_path / "site.sqlite"
    con = _database_at(path, 7)
    con.execute("INSERT INTO users (email, password_hash, session_token) VALUES ('a@example.org', 'x', 't')")
    calm = {"nv": 0.9, "bkl": 0.1, "mel": 0.0, "bcc": 0.0, "akiec": 0.0, "df": 0.0, "vasc": 0.0}
    measured = json.dumps({"sharpness": 0.1, "glare_share": 0.0, "brightness": 0.5, "issues": ["blur"]})
    with con:
        for row_id, quality in (("old", None), ("new", measured)):
            con.execute("INSERT INTO detections (id, user_id, image_key, model_version, top_class, confidence, probs, "
                        "uncertain, decision, quality) VALUES (?, 1, 'k', 'm', 'nv', 0.9, ?, 0, ?, ?)",
                        (row_id, json.dumps(calm), json.dumps(decide(calm, None, uncertain=False).to_dict()),
                         quality))
    con.close()
    assert db.migrate(path) == len(db.MIGRATIONS)
    con = db.connect(path)
    rows = {r["id"]: r for r in con.execute("SELECT * FROM checks")}
    assert json.loads(rows["old"]["quality"]) == {"issues": [], "measured": False}
    assert json.loads(rows["new"]["quality"]) == json.loads(measured)  # measured rows untouched
    assert quality_advice(rows["old"]) == [] and len(quality_advice(rows["new"])) == 1
    assert con.execute("SELECT count(*) FROM checks WHERE quality IS NULL").fetchone()[0] == 0


def test_the_table_of_checks_is_renamed_with_its_rows_and_indexes(tmp_path: Path) -> None:
    """Migration 9: ``detections`` becomes ``checks`` (the name the pages, routes and classes use); every row and
    every column stays, and the indexes the history and the spot timeline read are there under the new name."""
    path = tmp_path / "site.sqlite"
    con = _database_at(path, 8)
    con.execute("INSERT INTO users (email, password_hash, session_token) VALUES ('a@example.org', 'x', 't')")
    with con:
        con.execute("INSERT INTO detections (id, user_id, image_key, model_version, top_class, confidence, probs, "
                    "uncertain, decision, quality, spot) VALUES ('kept', 1, 'k', 'm', 'nv', 0.9, '{}', 0, '{}', "
                    "'{\"issues\": []}', 'left shoulder')")
    columns = [r[1] for r in con.execute("PRAGMA table_info(detections)")]
    con.close()
    assert db.migrate(path) == len(db.MIGRATIONS) == 10
    con = db.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "checks" in tables and "detections" not in tables
    assert [r[1] for r in con.execute("PRAGMA table_info(checks)")] == [*columns, "age", "sex"]  # 10 adds two
    row = con.execute("SELECT * FROM checks WHERE id = 'kept'").fetchone()
    assert row["spot"] == "left shoulder" and row["user_id"] == 1
    assert (row["age"], row["sex"]) == (None, "")  # migration 10: nothing said about a check made before it
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'checks'")
               if not r[0].startswith("sqlite_autoindex")}
    assert indexes == {"checks_user", "checks_site", "checks_spot"}
    with con:  # the account's checks still go with the account
        con.execute("DELETE FROM users WHERE id = 1")
    assert con.execute("SELECT count(*) FROM checks").fetchone()[0] == 0
