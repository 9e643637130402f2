"""Accounts: the user object for Flask-Login and the queries on the users table."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from flask_login import UserMixin

from webapp.db import get_db
from webapp.security import hash_api_token, new_session_token


@dataclass
class User(UserMixin):
    id: int
    email: str
    name: str
    password_hash: str
    verified: bool
    session_token: str

    def get_id(self) -> str:
        # The session carries id + a rotating token, so rotating the token logs out every other session.
        return f"{self.id}:{self.session_token}"

    @classmethod
    def from_row(cls, row: sqlite3.Row | None) -> User | None:
        if row is None:
            return None
        return cls(row["id"], row["email"], row["name"], row["password_hash"], bool(row["verified"]),
                   row["session_token"])


def by_id(user_id: int) -> User | None:
    return User.from_row(get_db().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())


def by_email(email: str) -> User | None:
    return User.from_row(get_db().execute("SELECT * FROM users WHERE email = ?", (email.strip(),)).fetchone())


def load_session_user(session_id: str) -> User | None:
    user_id, _, token = session_id.partition(":")
    user = by_id(int(user_id)) if user_id.isdigit() else None
    return user if user is not None and token and user.session_token == token else None


def create(email: str, password_hash: str, name: str = "") -> User | None:
    """The new account, or None if the email is already registered (also when a concurrent request won)."""
    db = get_db()
    try:
        with db:
            cur = db.execute("INSERT INTO users (email, name, password_hash, session_token) VALUES (?, ?, ?, ?)",
                             (email.strip(), name.strip(), password_hash, new_session_token()))
    except sqlite3.IntegrityError:
        return None
    return by_id(cur.lastrowid)  # type: ignore[arg-type]


def update(user_id: int, **fields: object) -> None:
    allowed = {"email", "name", "password_hash", "verified", "session_token"}
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"cannot update {sorted(bad)}; allowed: {sorted(allowed)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    db = get_db()
    with db:
        db.execute(f"UPDATE users SET {sets} WHERE id = ?", (*fields.values(), user_id))  # noqa: S608 - keys checked


def rotate_session(user_id: int) -> str:
    token = new_session_token()
    update(user_id, session_token=token)
    return token


def revoke_api_tokens(user_id: int) -> int:
    """Delete every API token of the user (password change or reset); returns how many."""
    db = get_db()
    with db:
        return db.execute("DELETE FROM api_tokens WHERE user_id = ?", (user_id,)).rowcount


def api_tokens(user_id: int) -> list[sqlite3.Row]:
    return get_db().execute("SELECT id, hint, created_at FROM api_tokens WHERE user_id = ? ORDER BY id",
                            (user_id,)).fetchall()


def add_api_token(user_id: int, digest: str, hint: str) -> None:
    db = get_db()
    with db:
        db.execute("INSERT INTO api_tokens (user_id, token_hash, hint) VALUES (?, ?, ?)", (user_id, digest, hint))


def revoke_api_token(user_id: int, token_id: int) -> bool:
    db = get_db()
    with db:
        return db.execute("DELETE FROM api_tokens WHERE id = ? AND user_id = ?", (token_id, user_id)).rowcount > 0


def by_api_token(token: str) -> User | None:
    row = get_db().execute("SELECT user_id FROM api_tokens WHERE token_hash = ?", (hash_api_token(token),)).fetchone()
    return by_id(row["user_id"]) if row else None


def delete(user_id: int) -> list[str]:
    """Delete the account (detections and tokens cascade); returns the image keys whose files must go too."""
    db = get_db()
    with db:
        keys = [r["image_key"] for r in db.execute("SELECT image_key FROM detections WHERE user_id = ?", (user_id,))]
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return keys
