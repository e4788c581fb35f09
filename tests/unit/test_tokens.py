"""API tokens: shown once, stored hashed, checked by id and secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from dihya.store import Store, sqlite_url
from dihya.store.tokens import TokenError, authenticate, create_token, list_tokens, revoke_token


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(sqlite_url(tmp_path / "state.sqlite3"), create=True)


def test_create_authenticate_revoke(store: Store, tmp_path: Path) -> None:
    token = create_token(store, "ci-bot", "developer")
    info = authenticate(store, token)
    assert info is not None and (info.name, info.role) == ("ci-bot", "developer")
    assert [t.name for t in list_tokens(store)] == ["ci-bot"]
    secret = token.rsplit("_", 1)[1]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite3*"))
    assert secret.encode() not in raw, "the secret is stored in clear"
    assert revoke_token(store, "ci-bot") is True
    assert authenticate(store, token) is None
    assert revoke_token(store, "ci-bot") is False


def test_wrong_secrets_are_refused(store: Store) -> None:
    token = create_token(store, "ops", "admin")
    prefix, token_id, secret = token.split("_", 2)
    other = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for attempt in (f"{prefix}_{token_id}_{other}", f"{prefix}_{'0' * 16}_{secret}", "",
                    "dihya_", token + "x", token.upper()):
        assert authenticate(store, attempt) is None


def test_bad_input(store: Store) -> None:
    with pytest.raises(TokenError, match="role"):
        create_token(store, "x", "root")
    with pytest.raises(TokenError, match="name"):
        create_token(store, "bad name!", "viewer")
    create_token(store, "dup", "viewer")
    with pytest.raises(TokenError, match="exists"):
        create_token(store, "dup", "viewer")


def test_switches_bump_the_state_version(store: Store) -> None:
    start = store.state_version()
    assert store.set_plugin_disabled("x", True, reason="why", actor="p-1") is True
    assert store.state_version() == start + 1
    assert store.plugin_switches()["x"].reason == "why"
    assert store.set_plugin_disabled("x", False) is True
    assert store.set_plugin_disabled("x", False) is False  # nothing to change
    assert store.plugin_switches() == {}
    assert store.state_version() == start + 2


def test_concurrent_switch_writers_never_fail(tmp_path: Path) -> None:
    """Read-then-write switches under contention (the HTTP API's disable/enable from
    several workers, reloads bumping the version): no 'database is locked'."""
    import threading

    url = sqlite_url(tmp_path / "state.sqlite3")
    Store(url, create=True).ensure_schema()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        store = Store(url)  # its own connections, as another worker process would have
        try:
            for round_ in range(15):
                store.set_plugin_disabled(f"p{index % 3}", round_ % 2 == 0, reason="x")
                store.bump_state_version()
                store.state_version()
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
