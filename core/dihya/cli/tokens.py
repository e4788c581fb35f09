"""`dihya tokens create|list|rotate|revoke`: the API's bearer tokens (hashed, with a role).

`create` and `rotate` print the token alone on stdout (everything else goes to stderr), so
`TOKEN=$(dihya tokens create ...)` gets the token, or fails with exit 1 and an empty value.
"""

from __future__ import annotations

import datetime as dt
import time

import attrs
import click

from dihya.cli._common import (
    CheckFailed,
    State,
    Usage,
    echo_json,
    pass_state,
    user,
)
from dihya.config import (
    ROLES,
)

_EXPIRES_HELP = ("Valid for this long, then refused with 401 (`expired-token`): a whole "
                 "number and m, h, d or w, e.g. 90d. Default: no expiry.")


def _expiry(expires: str | None) -> float | None:
    from dihya.store.tokens import TokenError, parse_duration

    if expires is None:
        return None
    try:
        return time.time() + parse_duration(expires)
    except TokenError as exc:
        raise Usage(f"--expires: {exc}") from exc


@click.group()
def tokens() -> None:
    """Create, list, rotate and revoke API tokens (stored only as hashes)."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who or what the token is for (unique).")
@click.option("--expires", metavar="DURATION", help=_EXPIRES_HELP)
@pass_state
def tokens_create(state: State, role: str, name: str, expires: str | None) -> None:
    """Create a token; it is printed once, alone on stdout (exit 1 if NAME exists)."""
    from dihya.store.tokens import TokenError, create_token

    expires_at = _expiry(expires)
    store = state.store(create=True)
    assert store is not None
    try:
        token = create_token(store, name, role, expires_at)
    except TokenError as exc:
        raise CheckFailed(str(exc)) from exc
    state.auditor().record("token.created", "ok", subject=user(), target=name, role=role)
    until = f", valid until {_when(expires_at)}" if expires_at is not None else ""
    click.echo(f"created token {name!r} with role {role}{until}; it is shown only now:",
               err=True)
    click.echo(token)


@tokens.command("rotate")
@click.argument("name")
@click.option("--expires", metavar="DURATION",
              help="A new validity from now (e.g. 90d). Default: keep the token's expiry.")
@pass_state
def tokens_rotate(state: State, name: str, expires: str | None) -> None:
    """Give token NAME a new secret: the old one is refused at once, the role is kept.

    The new token is printed once, alone on stdout."""
    from dihya.store.tokens import TokenError, rotate_token

    expires_at = _expiry(expires)
    store = state.store()
    if store is None:
        raise CheckFailed(f"no token named {name!r}: there is no state store yet")
    try:
        token, info = rotate_token(store, name, expires_at, keep_expiry=expires is None)
    except TokenError as exc:
        raise CheckFailed(str(exc)) from exc
    state.auditor().record("token.rotated", "ok", subject=user(), target=name, role=info.role)
    until = f", valid until {_when(info.expires_at)}" if info.expires_at is not None else ""
    click.echo(f"rotated token {name!r} (role {info.role}{until}); the old secret no longer "
               "works; the new token is shown only now:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_state
def tokens_list(state: State, as_json: bool) -> None:
    """List tokens (names, roles, dates; never the secrets)."""
    from dihya.store.tokens import list_tokens

    store = state.store()
    rows = [attrs.asdict(t) for t in list_tokens(store)] if store is not None else []
    for row in rows:
        row.pop("id", None)
    now = time.time()
    for row in rows:
        row["expired"] = row["expires_at"] is not None and now >= row["expires_at"]
        for key in ("created_at", "last_used_at", "expires_at"):
            row[key.removesuffix("_at") + "_iso"] = _iso(row[key])
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        used = _when(row["last_used_at"]) if row["last_used_at"] is not None else "never"
        until = "no expiry" if row["expires_at"] is None else (
            ("EXPIRED " if row["expired"] else "expires ") + _when(row["expires_at"]))
        click.echo(f"{row['name']:<32} {row['role']:<10} created {_when(row['created_at'])}"
                   f"  last used {used}  {until}")
    if not rows:
        click.echo("no token")


@tokens.command("revoke")
@click.argument("name")
@pass_state
def tokens_revoke(state: State, name: str) -> None:
    """Revoke the token named NAME at once."""
    from dihya.store.tokens import revoke_token

    store = state.store()
    if store is None or not revoke_token(store, name):
        raise CheckFailed(f"no token named {name!r} (see `dihya tokens list`)")
    state.auditor().record("token.revoked", "ok", subject=user(), target=name)
    click.echo(f"revoked token {name!r}")


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, to the second, or None."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
