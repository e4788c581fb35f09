"""API tokens: created once, stored only as hashes, checked in constant time.

A token reads `dihya_<id>_<secret>`: the id finds the row, the secret's SHA-256 is compared
with `hmac.compare_digest`. Secrets are 256 random bits, so a fast hash is enough (a slow
KDF protects guessable passwords, not random keys). A token's last use is recorded to the
minute (`LAST_USED_STEP_S`): one write per token per minute at most, not one per request.
A token may expire (`expires_at`): past it, it is refused as `expired-token`; `rotate_token`
gives a token a new secret in one transaction, the old one failing at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Final, NamedTuple

import attrs
import sqlalchemy as sa

from dihya.config import ROLES
from dihya.reasons import FixedReasonError
from dihya.store import Store, tokens_table

_TOKEN: Final = re.compile(r"^dihya_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
LAST_USED_STEP_S: Final = 60.0
#: `--expires` units: seconds per unit.
_UNITS: Final = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION: Final = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
INVALID: Final = "invalid-token"
EXPIRED: Final = "expired-token"


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
    expires_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


def parse_duration(text: str) -> float:
    """`90d`, `12h`, `30m`, `2w` as seconds; `TokenError` otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise TokenError(f"invalid duration {text!r}: a whole number and a unit, m (minutes), "
                         "h (hours), d (days) or w (weeks), e.g. `90d`")
    return int(match.group(1)) * _UNITS[match.group(2)]


class _TokenRow(NamedTuple):
    """A row of `tokens_table` as `_READ_TOKEN` reads it (its columns, in its order)."""

    id: str
    name: str
    role: str
    secret_sha256: str
    created_at: float
    last_used_at: float | None
    expires_at: float | None


_READ_TOKEN: Final = (f"SELECT {', '.join(_TokenRow._fields)} FROM {tokens_table.name} "
                      "WHERE id = :id")


def _info(row: sa.Row[Any] | _TokenRow, last_used: float | None = None) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.role, row.created_at,
                     last_used if last_used is not None else row.last_used_at, row.expires_at)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(store: Store, name: str, role: str, expires_at: float | None = None) -> str:
    """Create a token for `name` with `role` (valid until `expires_at`, None: no expiry)
    and return it; it is never shown again."""
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
            raise TokenError(f"a token named {name!r} exists: pick another name, give it a "
                             f"new secret with `dihya tokens rotate {name}`, or revoke it "
                             f"first (`dihya tokens revoke {name}`)")
        conn.execute(tokens_table.insert().values(
            id=token_id, name=name, role=role, secret_sha256=_digest(secret),
            created_at=time.time(), expires_at=expires_at))
    return f"dihya_{token_id}_{secret}"


def rotate_token(store: Store, name: str, expires_at: float | None = None,
                 keep_expiry: bool = True) -> tuple[str, TokenInfo]:
    """Give the token `name` a new id and secret (the old token fails from the commit on)
    and return it with the token's info; its role is kept, and its expiry unless
    `keep_expiry` is False (then `expires_at`). `TokenError` if there is none."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with store.locked("tokens") as conn:
        row = conn.execute(sa.select(tokens_table).where(tokens_table.c.name == name)).first()
        if row is None:
            raise TokenError(f"no token named {name!r} (see `dihya tokens list`)")
        expiry = row.expires_at if keep_expiry else expires_at
        now = time.time()
        conn.execute(tokens_table.update().where(tokens_table.c.id == row.id).values(
            id=token_id, secret_sha256=_digest(secret), created_at=now, last_used_at=None,
            expires_at=expiry))
    return (f"dihya_{token_id}_{secret}",
            TokenInfo(token_id, row.name, row.role, now, None, expiry))


def list_tokens(store: Store) -> list[TokenInfo]:
    with store.begin() as conn:
        rows = conn.execute(sa.select(tokens_table).order_by(tokens_table.c.name)).all()
    return [_info(r) for r in rows]


def revoke_token(store: Store, name: str) -> bool:
    """Delete the token named `name`; False if there is none."""
    with store.begin() as conn:
        deleted = conn.execute(tokens_table.delete().where(tokens_table.c.name == name))
    return bool(deleted.rowcount)


def authenticate(store: Store, token: str) -> TokenInfo | None:
    """The owner of `token`, or None (unknown, revoked or expired). Runs the same
    comparison whether the id exists or not."""
    info, _reason = check_token(store, token)
    return info


def check_token(store: Store, token: str) -> tuple[TokenInfo | None, str | None]:
    """(the owner of `token`, None), or (None, `invalid-token` or `expired-token`).

    A valid token's use is recorded (at most once a minute per token)."""
    match = _TOKEN.match(token)
    token_id, secret = match.groups() if match else ("", "x")
    # one SELECT on the driver's connection (`Store.read_row`): this runs on every request
    row = store.read_row(_READ_TOKEN, {"id": token_id})
    found = _TokenRow(*row) if row is not None else None
    expected = found.secret_sha256 if found is not None else "0" * 64
    if not hmac.compare_digest(_digest(secret), expected) or found is None or match is None:
        return None, INVALID
    if found.expires_at is not None and time.time() >= found.expires_at:
        return None, EXPIRED
    return _info(found, _note_use(store, found.id, found.last_used_at)), None


def token_by_id(store: Store, token_id: str) -> TokenInfo | None:
    """The token with this id, if it still exists (a console session's owner)."""
    with store.begin() as conn:
        row = conn.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
    if row is None:
        return None
    return _info(row)


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
