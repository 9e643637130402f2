"""API tokens: the SQL of the api_tokens table (tokens are stored hashed; the token itself is shown once)."""

from __future__ import annotations

import sqlite3

from webapp import users
from webapp.db import get_db
from webapp.security import hash_api_token, new_api_token

MAX_TOKENS_PER_ACCOUNT = 10


def create(user_id: int) -> str | None:
    """A new token for the user; returns the token (only its hash and last 4 characters are kept), or None when
    the account already holds :data:`MAX_TOKENS_PER_ACCOUNT` (checked and inserted in one statement: no race)."""
    token, digest = new_api_token()
    db = get_db()
    with db:
        inserted = db.execute("INSERT INTO api_tokens (user_id, token_hash, hint) SELECT ?, ?, ? "
                              "WHERE (SELECT count(*) FROM api_tokens WHERE user_id = ?) < ?",
                              (user_id, digest, token[-4:], user_id, MAX_TOKENS_PER_ACCOUNT)).rowcount
    return token if inserted else None


def of_user(user_id: int) -> list[sqlite3.Row]:
    return get_db().execute("SELECT id, hint, created_at FROM api_tokens WHERE user_id = ? ORDER BY id",
                            (user_id,)).fetchall()


MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id in a URL is simply not a token


def revoke(user_id: int, token_id: int) -> bool:
    db = get_db()
    with db:
        return db.execute("DELETE FROM api_tokens WHERE id = ? AND user_id = ?", (token_id, user_id)).rowcount > 0


def revoke_all(user_id: int) -> int:
    """Delete every token of the user (password change or reset); returns how many."""
    db = get_db()
    with db:
        return db.execute("DELETE FROM api_tokens WHERE user_id = ?", (user_id,)).rowcount


def owner(token: str) -> users.User | None:
    row = get_db().execute("SELECT user_id FROM api_tokens WHERE token_hash = ?", (hash_api_token(token),)).fetchone()
    return users.by_id(row["user_id"]) if row else None
