"""Requests without a valid token cannot fill the audit log.

Every 401 used to write an `auth.failed` event: anyone who reaches the port could make a
worker commit hundreds of audit rows a second (about 700/s measured on one worker,
300 bytes each), kept for the retention period. Each worker now records at most
`DIHYA_AUTH_FAILED_PER_MINUTE` of them a minute (default 60); the failures past it are
still refused, counted, and the next event recorded carries how many it stands for
(`count`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dihya.store.tokens import create_token
from dihya.web import create_app
from support.console import Console
from web.test_api import write_config


def _failed(app: Any) -> list[dict[str, Any]]:
    return [r for r in app.extensions["dihya"].auditor.log.rows() if r["type"] == "auth.failed"]


def test_a_flood_of_bad_tokens_writes_a_bounded_number_of_events(
        plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [], '[audit]\nkey = "k"\n')
    app = create_app(config, DIHYA_AUTH_FAILED_PER_MINUTE=3)
    client = app.test_client()
    statuses = [client.get("/api/v1/plugins", headers={"Authorization": f"Bearer bad{i}"})
                .status_code for i in range(20)]
    statuses += [client.get("/api/v1/plugins").status_code for _ in range(5)]
    assert statuses == [401] * 25  # every one still refused
    assert len(_failed(app)) == 3
    # the console's sign-in counts against the same budget
    console = Console(app)
    assert console.sign_in("dihya_0000000000000000_" + "x" * 43).status_code == 401
    assert len(_failed(app)) == 3
    # a valid token still works, and is not slowed or refused by the flood
    admin = create_token(app.extensions["dihya"].store, "admin-user", "admin")
    ok = client.get("/api/v1/plugins", headers={"Authorization": f"Bearer {admin}"})
    assert ok.status_code == 200


def test_the_failures_over_the_budget_are_counted_in_the_next_event(
        plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [], '[audit]\nkey = "k"\n')
    app = create_app(config, DIHYA_AUTH_FAILED_PER_MINUTE=2, DIHYA_AUTH_FAILED_WINDOW_S=0.2)
    client = app.test_client()
    for _ in range(7):
        assert client.get("/api/v1/plugins").status_code == 401
    sent = 7
    deadline = time.monotonic() + 60
    while len(_failed(app)) < 3 and time.monotonic() < deadline:  # a new window opens
        assert client.get("/api/v1/plugins").status_code == 401
        sent += 1
        time.sleep(0.05)
    events = _failed(app)
    assert len(events) >= 3
    # every failure is accounted for: one event each, or counted in a later one
    assert sum(e.get("count", 1) for e in events) == sent
    assert events[2]["count"] >= 6  # itself and the five refused past the first window
