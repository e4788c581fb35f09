"""A bearer token's check reads its row on the driver's connection (`Store.read_row`), on
SQLite and PostgreSQL alike: the same answers as the store's own transactions give, and
a revocation, a rotation or an expiry seen by the very next check."""

from __future__ import annotations

import time

import sqlalchemy as sa

from dihya.store import Store, tokens_table
from dihya.store.tokens import (
    EXPIRED,
    INVALID,
    _TokenRow,
    check_token,
    create_token,
    list_tokens,
    revoke_token,
    rotate_token,
)


def test_the_read_names_every_column_of_the_table() -> None:
    assert _TokenRow._fields == tuple(tokens_table.c.keys())


def test_check_matches_the_stored_row(store: Store) -> None:
    token = create_token(store, "ci-bot", "developer", expires_at=time.time() + 3600)
    info, reason = check_token(store, token)
    assert reason is None and info is not None
    listed = {t.name: t for t in list_tokens(store)}["ci-bot"]
    assert (info.id, info.name, info.role, info.created_at, info.expires_at) == \
        (listed.id, listed.name, listed.role, listed.created_at, listed.expires_at)
    assert isinstance(info.created_at, float) and isinstance(info.expires_at, float)
    assert info.last_used_at is not None  # the first use is recorded


def test_wrong_secret_unknown_id_and_garbage_are_invalid(store: Store) -> None:
    token = create_token(store, "ci-bot", "developer")
    prefix, token_id, secret = token.split("_", 2)
    other = "A" if secret[0] != "A" else "B"
    for bad in (f"{prefix}_{token_id}_{other}{secret[1:]}",
                f"{prefix}_{'0' * 16}_{secret}", "", "dihya_x_y",
                f"{prefix}_{token_id}_{secret}' OR '1'='1"):
        assert check_token(store, bad) == (None, INVALID), bad


def test_revocation_rotation_and_expiry_apply_to_the_next_check(store: Store) -> None:
    token = create_token(store, "ci-bot", "developer")
    assert check_token(store, token)[1] is None
    new, _info = rotate_token(store, "ci-bot")
    assert check_token(store, token) == (None, INVALID)
    assert check_token(store, new)[1] is None
    with store.begin() as conn:
        conn.execute(tokens_table.update().values(expires_at=time.time() - 1))
    assert check_token(store, new) == (None, EXPIRED)
    assert revoke_token(store, "ci-bot")
    assert check_token(store, new) == (None, INVALID)


def test_read_row_reads_what_a_transaction_committed(store: Store) -> None:
    token = create_token(store, "ci-bot", "viewer")
    token_id = token.split("_")[1]
    assert store.read_row("SELECT role FROM dihya_tokens WHERE id = :id",
                          {"id": token_id}) == ("viewer",)
    with store.begin() as conn:
        conn.execute(tokens_table.update().where(tokens_table.c.id == token_id)
                     .values(role="admin"))
    assert store.read_row("SELECT role FROM dihya_tokens WHERE id = :id",
                          {"id": token_id}) == ("admin",)
    assert store.read_row("SELECT role FROM dihya_tokens WHERE id = :id",
                          {"id": "nope"}) is None
    with store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tokens_table)).scalar() == 1
