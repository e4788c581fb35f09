"""API tokens: shown once, stored hashed, checked by id and secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dihya.cli import main
from dihya.store import Store, sqlite_url
from dihya.store.tokens import (
    EXPIRED,
    INVALID,
    TokenError,
    authenticate,
    check_token,
    create_token,
    list_tokens,
    parse_duration,
    revoke_token,
    rotate_token,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(sqlite_url(tmp_path / "state.sqlite3"), create=True)


def test_create_authenticate_revoke(store: Store, tmp_path: Path) -> None:
    token = create_token(store, "ci-bot", "developer")
    info = authenticate(store, token)
    assert info is not None and (info.name, info.role) == ("ci-bot", "developer")
    assert [t.name for t in list_tokens(store)] == ["ci-bot"]
    secret = token.split("_", 2)[2]  # dihya_<hex id>_<secret>: the secret may hold "_"
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


def test_last_use_is_recorded_once_a_minute_at_most(store: Store) -> None:
    token = create_token(store, "ci", "viewer")
    assert list_tokens(store)[0].last_used_at is None
    first = authenticate(store, token)
    assert first is not None and first.last_used_at is not None
    stored = list_tokens(store)[0].last_used_at
    assert stored == first.last_used_at
    again = authenticate(store, token)
    assert again is not None and again.last_used_at == stored  # not rewritten within a minute


def test_an_expired_token_is_refused_with_its_own_reason(store: Store) -> None:
    past = create_token(store, "old", "admin", expires_at=time.time() - 1)
    future = create_token(store, "new", "admin", expires_at=time.time() + 3600)
    assert check_token(store, past) == (None, EXPIRED)
    assert authenticate(store, past) is None
    assert list_tokens(store)[1].last_used_at is None  # an expired token's use is not noted
    assert check_token(store, future)[0] is not None
    assert check_token(store, "dihya_nope") == (None, INVALID)
    assert parse_duration("90d") == 90 * 86400 and parse_duration("2w") == 14 * 86400
    assert parse_duration("30m") == 1800 and parse_duration("12h") == 43200
    for bad in ("", "90", "d", "0d", "1y", "-1d", "1.5d"):
        with pytest.raises(TokenError, match="invalid duration"):
            parse_duration(bad)


def test_rotate_gives_a_new_secret_and_refuses_the_old(store: Store) -> None:
    old = create_token(store, "ci", "developer", expires_at=time.time() + 60)
    new, info = rotate_token(store, "ci")
    assert new != old and info.role == "developer" and info.expires_at is not None
    assert authenticate(store, old) is None
    found = authenticate(store, new)
    assert found is not None and found.name == "ci"
    newer, info = rotate_token(store, "ci", None, keep_expiry=False)
    assert info.expires_at is None and authenticate(store, newer) is not None
    assert [t.name for t in list_tokens(store)] == ["ci"]
    with pytest.raises(TokenError, match="no token named 'nope'"):
        rotate_token(store, "nope")


def test_cli_create_twice_fails_and_prints_no_token(tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text(f'[store]\nurl = "{sqlite_url(tmp_path / "s.sqlite3")}"\n'
                      '[audit]\nkey = "k"\n')
    runner = CliRunner()
    base = ["--config", str(config), "tokens"]
    made = runner.invoke(main, [*base, "create", "--role", "viewer", "--name", "me",
                                "--expires", "90d"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("dihya_") and "\n" not in token  # alone on stdout
    assert "valid until" in made.stderr
    again = runner.invoke(main, [*base, "create", "--role", "viewer", "--name", "me"])
    assert again.exit_code == 1 and again.stdout == ""
    assert "a token named 'me' exists" in again.stderr and "tokens rotate me" in again.stderr
    bad = runner.invoke(main, [*base, "create", "--role", "viewer", "--name", "x",
                               "--expires", "soon"])
    assert bad.exit_code == 2 and "invalid duration 'soon'" in bad.stderr
    rotated = runner.invoke(main, [*base, "rotate", "me"])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith("dihya_") and new != token and "old secret no longer" in rotated.stderr
    missing = runner.invoke(main, [*base, "rotate", "nobody"])
    assert missing.exit_code == 1 and "no token named 'nobody'" in missing.stderr
    listed = json.loads(runner.invoke(main, [*base, "list", "--json"]).stdout)
    assert listed[0]["name"] == "me" and listed[0]["expired"] is False
    assert listed[0]["expires_iso"].endswith("Z") and "T" in listed[0]["created_iso"]
    events = runner.invoke(main, ["--config", str(config), "audit", "export"]).stdout
    assert '"type": "token.rotated"' in events
