"""API tokens: created once, stored only as hashes, checked in constant time.

A token reads `dihya_<id>_<secret>`: the id finds the row, the secret's SHA-256 is compared
with `hmac.compare_digest`. Secrets are 256 random bits, so a fast hash is enough (a slow
KDF protects guessable passwords, not random keys). A token's last use is recorded to the
minute (`LAST_USED_STEP_S`): one write per token per minute at most, not one per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Final

import attrs
import sqlalchemy as sa

from dihya.config import ROLES
from dihya.reasons import FixedReasonError
from dihya.store import Store, tokens_table

_TOKEN: Final = re.compile(r"^dihya_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
LAST_USED_STEP_S: Final = 60.0


class TokenError(FixedReasonError, ValueError):
    """A token operation was refused; the message says why and what to do."""

    REASON = "token-refused"


@attrs.frozen
class TokenInfo:
    """Who a valid token belongs to (never the secret)."""

    id: str
    name: str
    role: str
    created_at: float
    last_used_at: float | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(store: Store, name: str, role: str) -> str:
    """Create a token for `name` with `role` and return it; it is never shown again."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not _NAME.match(name):
        raise TokenError(f"token name {name!r} must be 1-128 letters, digits, `_.@-`")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with store.locked("tokens") as conn:  # read-then-write: under the store's write lock
        exists = conn.execute(sa.select(tokens_table.c.id).where(
            tokens_table.c.name == name)).first()
        if exists:
            raise TokenError(f"a token named {name!r} exists; revoke it first or pick "
                             "another name")
        conn.execute(tokens_table.insert().values(
            id=token_id, name=name, role=role, secret_sha256=_digest(secret),
            created_at=time.time()))
    return f"dihya_{token_id}_{secret}"


def list_tokens(store: Store) -> list[TokenInfo]:
    with store.begin() as conn:
        rows = conn.execute(sa.select(tokens_table).order_by(tokens_table.c.name)).all()
    return [TokenInfo(r.id, r.name, r.role, r.created_at, r.last_used_at) for r in rows]


def revoke_token(store: Store, name: str) -> bool:
    """Delete the token named `name`; False if there is none."""
    with store.begin() as conn:
        deleted = conn.execute(tokens_table.delete().where(tokens_table.c.name == name))
    return bool(deleted.rowcount)


def authenticate(store: Store, token: str) -> TokenInfo | None:
    """The owner of `token`, or None. Runs the same comparison whether the id exists or not."""
    match = _TOKEN.match(token)
    token_id, secret = match.groups() if match else ("", "x")
    with store.begin() as conn:
        row = conn.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
    expected = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(_digest(secret), expected) or row is None or match is None:
        return None
    last_used = _note_use(store, row.id, row.last_used_at)
    return TokenInfo(row.id, row.name, row.role, row.created_at, last_used)


def token_by_id(store: Store, token_id: str) -> TokenInfo | None:
    """The token with this id, if it still exists (a console session's owner)."""
    with store.begin() as conn:
        row = conn.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
    if row is None:
        return None
    return TokenInfo(row.id, row.name, row.role, row.created_at, row.last_used_at)


def _note_use(store: Store, token_id: str, last: float | None) -> float | None:
    """Record that the token was used now, unless that was recorded less than a minute ago."""
    now = time.time()
    if last is not None and now - last < LAST_USED_STEP_S:
        return last
    try:
        with store.begin() as conn:
            conn.execute(tokens_table.update().where(tokens_table.c.id == token_id)
                         .values(last_used_at=now))
    except sa.exc.SQLAlchemyError:  # a busy store must not refuse a valid token
        return last
    return now
