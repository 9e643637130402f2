"""Accounts: the user object for Flask-Login and the queries on the users table."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from flask_login import UserMixin

from webapp.db import get_db
from webapp.security import new_session_token


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
        db.execute(f"UPDATE users SET {sets} WHERE id = ?", (*fields.values(), user_id))  # keys checked above


def change_email(user_id: int, email: str) -> bool:
    """Move the account to a confirmed new address; False if another account holds it (checked by the unique
    index, so two accounts confirming the same address at once cannot both get it, and neither gets a 500)."""
    db = get_db()
    try:
        with db:
            db.execute("UPDATE users SET email = ?, verified = 1 WHERE id = ?", (email.strip(), user_id))
    except sqlite3.IntegrityError:
        return False
    return True


def rotate_session(user_id: int) -> str:
    token = new_session_token()
    update(user_id, session_token=token)
    return token


def delete(user_id: int) -> list[str]:
    """Delete the account (checks and tokens cascade); returns the image keys whose files must go too."""
    db = get_db()
    with db:
        keys = [r["image_key"] for r in db.execute("SELECT image_key FROM checks WHERE user_id = ?", (user_id,))]
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return keys
