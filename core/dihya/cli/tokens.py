"""`dihya tokens create|list|revoke`: the API's bearer tokens (stored hashed, with a role).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import click

from dihya.config import (
    ROLES,
)

if TYPE_CHECKING:
    pass
from dihya.cli._common import (
    CheckFailed,
    State,
    echo_json,
    pass_state,
    user,
)


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored only as hashes)."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who or what the token is for (unique).")
@pass_state
def tokens_create(state: State, role: str, name: str) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from dihya.store.tokens import TokenError, create_token

    store = state.store(create=True)
    assert store is not None
    try:
        token = create_token(store, name, role)
    except TokenError as exc:
        raise CheckFailed(str(exc)) from exc
    state.auditor().record("token.created", "ok", subject=user(), target=name, role=role)
    click.echo(f"created token {name!r} with role {role}; it is shown only now:", err=True)
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
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<32} {row['role']:<10} created {_when(row['created_at'])}")
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
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
