"""Rate limiting starts no thread per request (`dihya.web.ratelimit.ThreadlessMemoryStorage`)."""

from __future__ import annotations

import threading
from pathlib import Path

from test_api import TODO, Api, problem, write_config

from dihya.web import create_app
from dihya.web.ratelimit import ThreadlessMemoryStorage


def _timers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if isinstance(t, threading.Timer)}


def test_rate_limited_requests_start_no_timer_thread(plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [], '[web]\nrate_limit = "5/minute"\n')
    app = create_app(config)
    api = Api(app, {})
    limiter = app.extensions["dihya.limiter"]
    assert isinstance(limiter.storage, ThreadlessMemoryStorage)  # memory:// by default
    before = set(threading.enumerate())
    statuses = []
    for _ in range(7):  # the limit, then past it
        statuses.append(api.post("/api/v1/generate", json={"needs": TODO}).status_code)
        # limits' own memory storage has a Timer thread alive for 10 ms after most requests
        assert not _timers()
        assert set(threading.enumerate()) <= before
    assert statuses == [200] * 5 + [429] * 2
    problem(api.post("/api/v1/generate", json={"needs": TODO}), 429)


def test_expired_counters_are_dropped_without_a_thread() -> None:
    storage = ThreadlessMemoryStorage("dihya-memory://")
    assert storage.incr("a", expiry=0) == 1  # expires at once
    assert storage.get("a") == 0 and "a" not in storage.storage  # dropped when read
    storage.incr("b", expiry=0)
    storage._swept_at = 0.0  # a second has passed since the last sweep
    storage.incr("c", expiry=60)
    assert "b" not in storage.storage and storage.get("c") == 1  # swept by that request
    assert not _timers()
