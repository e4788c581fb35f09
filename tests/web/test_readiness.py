"""Readiness tells the truth and failures are 503 with Retry-After, through the test client.

The faults are real: a SQLite file deleted or replaced under the app, a required plugin
whose sandbox worker cannot start (its import outlasts the start timeout). The same
faults against a real `dihya serve`, and those that need root or PostgreSQL, are in
tests/integration/test_store_faults.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_api import PROBLEM, TODO, Api, write_config

from dihya.store import Store, meta_table
from dihya.web import create_app
from support.wheels import plugin_source


@pytest.fixture
def api(tmp_path: Path) -> Api:
    config = write_config(tmp_path / "dihya.toml", [], '[web]\nrate_limit = "1000/minute"\n',
                          plugins="allow = []")
    return Api(create_app(config), {})


def _unavailable(response: Any, reason: str) -> dict[str, Any]:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    assert int(response.headers["Retry-After"]) >= 1
    body: dict[str, Any] = response.get_json(force=True)
    assert body["reason"] == reason, body
    return body


def test_ready_means_a_write_commits_and_the_probe_does_not_grow_the_store(api: Api) -> None:
    state = api.app.extensions["dihya"]
    with state.store.begin() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(meta_table)).scalar_one()
    for _ in range(5):
        body = api.client.get("/readyz").get_json()
        assert body["checks"] == {"config": True, "registry": True, "store": True,
                                  "audit": True, "sandbox": True}
        assert body["store_problem"] is None
        assert body["audit"] == {"ok": True, "pending": 0, "in_flight": 0,
                                 "in_flight_s": 0.0, "problem": None}
    with state.store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            meta_table)).scalar_one() == rows
        beat = conn.execute(sa.select(meta_table.c.value).where(
            meta_table.c.key == "heartbeat")).scalar_one()
    assert float(beat) > 0  # the probe wrote, and committed


@pytest.mark.parametrize("fault, reason", [
    ("deleted", "database-file-deleted"),
    ("replaced", "database-file-replaced"),
])
def test_a_store_file_gone_under_the_app_fails_every_call_until_it_is_back(
        api: Api, tmp_path: Path, fault: str, reason: str) -> None:
    state = api.app.extensions["dihya"]
    path = state.store.path
    assert api.post("/api/v1/generate", json={"needs": TODO}).status_code == 200
    kept = tmp_path / "kept.sqlite3"
    os.link(path, kept)
    if fault == "deleted":
        path.unlink()
    else:  # another store moved into its place
        other = tmp_path / "other.sqlite3"
        Store(f"sqlite:///{other}", create=True).ensure_schema()
        os.replace(other, path)
    ready = api.client.get("/readyz")
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) >= 1
    body = ready.get_json()
    assert body["checks"]["store"] is False
    assert body["store_problem"]["reason"] == reason
    _unavailable(api.post("/api/v1/generate", json={"needs": TODO}), reason)
    _unavailable(api.get("/api/v1/plugins", "viewer"), reason)  # not 401: no token check
    _unavailable(api.post("/api/v1/plugins/reload", "admin"), reason)
    assert api.client.get("/healthz").status_code == 200
    if fault == "deleted":
        assert not path.exists(), "the app created a new store in place of the deleted one"
    os.replace(kept, path)  # the same file is back
    assert api.post("/api/v1/generate", json={"needs": TODO}).status_code == 200
    assert api.client.get("/readyz").status_code == 200


def test_an_app_that_starts_without_its_store_fails_closed_then_serves(
        tmp_path: Path) -> None:
    """What a `dihya serve` worker restarted after the file was deleted does: no new,
    empty store, 503 (never 401), and the real registry once the store is back."""
    config = write_config(tmp_path / "dihya.toml", [], '[web]\nrate_limit = "1000/minute"\n',
                          plugins="allow = []")
    first = Api(create_app(config), {})
    store = first.app.extensions["dihya"].store.path
    kept = tmp_path / "kept.sqlite3"
    os.link(store, kept)
    store.unlink()
    app = create_app(config)  # a new worker: the store marker says a store was there
    api = Api.__new__(Api)
    api.app, api.client, api.plugins, api.tokens = app, app.test_client(), {}, first.tokens
    assert not store.exists()
    _unavailable(api.post("/api/v1/generate", json={"needs": TODO}), "store-missing")
    body = api.client.get("/readyz").get_json()
    assert body["store_problem"]["reason"] == "store-missing"
    os.link(kept, store)
    state = app.extensions["dihya"]
    state._open_retry_at = 0.0  # skip the one-second pause between tries
    assert api.post("/api/v1/generate", json={"needs": TODO}).status_code == 200
    assert api.client.get("/readyz").status_code == 200


SLOW_IMPORT = "import time\ntime.sleep(30)\n"


def test_a_required_plugin_whose_sandbox_cannot_start_is_503_not_502(
        plugin_site: Any, tmp_path: Path) -> None:
    name = plugin_site.unique("slowstart")
    plugin_site.install(name, source=SLOW_IMPORT + plugin_source(name))
    entry = plugin_site.entry(name, mode="sandbox")
    config = tmp_path / "dihya.toml"
    config.write_text(
        f'[plugins]\nhook_timeout_s = 2.0\n[[plugins.allow]]\nname = "{entry.name}"\n'
        f'distribution = "{entry.distribution}"\nversion = "{entry.version}"\n'
        f'fingerprint = "{entry.fingerprint}"\nmode = "sandbox"\nrequired = true\n'
        '[sandbox]\nstart_timeout_s = 2\n[web]\nrate_limit = "1000/minute"\n')
    api = Api(create_app(config), {})
    try:
        body = _unavailable(api.post("/api/v1/generate", json={"needs": TODO}),
                            "sandbox-start-failed")
        assert body["type"].endswith(":sandbox-unavailable")
        assert body["report"]["plugins"][0]["name"] == name
        ready = api.client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["sandbox"]["failed"] == [name]
    finally:
        api.app.extensions["dihya"].close()
