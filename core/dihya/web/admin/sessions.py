"""Console sessions, kept in the state store so that every worker and node sees them.

The browser holds only a random id (256 bits) in an `HttpOnly`, `SameSite=Strict` cookie;
the store holds its SHA-256, the API token it was started with, a CSRF token, when it
started and when it was last used. Nothing about the session is trusted from the client.
Each request re-reads the token: revoking it (or erasing its owner) ends its sessions at
once, on every worker. A session ends after `idle_s` without a page view (polling for
changes is not a view) or `max_age_s` after it started, or when its owner signs out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

import attrs
import sqlalchemy as sa

from dihya.store import Store, console_sessions_table, tokens_table
from dihya.store.tokens import TokenInfo

#: Roles that may sign in: `admin` changes things, `viewer` only looks.
CONSOLE_ROLES: Final = ("admin", "viewer")
IDLE_S: Final = 15 * 60.0
MAX_AGE_S: Final = 12 * 3600.0
#: `seen_at` is written at most this often: one write per half minute, not per page.
TOUCH_STEP_S: Final = 30.0

_table = console_sessions_table


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@attrs.frozen
class ConsoleSession:
    """A live session and who it belongs to (the token's name and role, as stored now)."""

    key: str
    token: TokenInfo
    csrf: str
    created_at: float
    seen_at: float
    notice: str | None

    @property
    def role(self) -> str:
        return self.token.role

    @property
    def is_admin(self) -> bool:
        return self.token.role == "admin"

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf.encode(),
                                                   (value or "").encode("utf-8", "replace"))


class SessionStore:
    """Start, find, touch and end console sessions in `store`."""

    def __init__(self, store: Store, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S):
        self.store = store
        self.idle_s = idle_s
        self.max_age_s = max_age_s

    def start(self, token: TokenInfo) -> str:
        """A new session for `token`; returns the id for the cookie (never stored)."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self.store.begin() as conn:
            # sessions that ended without a sign-out, so the table does not grow
            conn.execute(_table.delete().where(sa.or_(
                _table.c.seen_at < now - self.idle_s, _table.c.created_at < now - self.max_age_s)))
            conn.execute(_table.insert().values(
                id_sha256=_key(session_id), token_id=token.id, csrf=secrets.token_urlsafe(32),
                created_at=now, seen_at=now, notice=None))
        return session_id

    def find(self, session_id: str | None, touch: bool = True) -> ConsoleSession | None:
        """The live session with this id, or None (unknown, expired, token revoked, or a
        role that may no longer sign in). `touch`: this request counts as activity."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        now = time.time()
        query = (sa.select(_table, tokens_table.c.name, tokens_table.c.role,
                           tokens_table.c.created_at.label("token_created_at"),
                           tokens_table.c.last_used_at, tokens_table.c.expires_at)
                 .join(tokens_table, tokens_table.c.id == _table.c.token_id, isouter=True)
                 .where(_table.c.id_sha256 == key))
        with self.store.begin() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        expired = (now - row.seen_at >= self.idle_s or now - row.created_at >= self.max_age_s)
        token_expired = row.expires_at is not None and now >= row.expires_at
        if expired or token_expired or row.name is None or row.role not in CONSOLE_ROLES:
            self.end(key)
            return None
        seen_at = row.seen_at
        if touch and now - seen_at >= TOUCH_STEP_S:
            seen_at = now
            with self.store.begin() as conn:
                conn.execute(_table.update().where(_table.c.id_sha256 == key)
                             .values(seen_at=now))
        token = TokenInfo(row.token_id, row.name, row.role, row.token_created_at,
                          row.last_used_at, row.expires_at)
        return ConsoleSession(key, token, row.csrf, row.created_at, seen_at, row.notice)

    def end(self, key: str) -> None:
        with self.store.begin() as conn:
            conn.execute(_table.delete().where(_table.c.id_sha256 == key))

    def set_notice(self, key: str, text: str | None) -> None:
        """A message for the session's next page (after a redirect)."""
        with self.store.begin() as conn:
            conn.execute(_table.update().where(_table.c.id_sha256 == key).values(notice=text))
