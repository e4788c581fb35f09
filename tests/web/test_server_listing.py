"""A server worker lists sandbox-mode plugins from what their workers said when checked
(`dihya.store.facts`): its start waits for no worker, they warm up in the background, and
one that no longer starts is reported failed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from test_api import TODO, Api, write_config

from dihya.web import create_app
from support.wheels import plugin_source

# the import waits while a file exists beside the plugin (inside the worker's view)
HELD_IMPORT = ("import os, time\nwhile os.path.exists(os.path.join(os.path.dirname("
               "os.path.dirname(__file__)), 'hold')):\n    time.sleep(0.01)\n"
               "if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), "
               "'break')):\n    raise ImportError('broken on purpose')\n")
HOOK = "def after_generation(self, code, needs):\n    code['ran.txt'] = 'yes'\n    return code\n"


def _until(predicate: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _setup(plugin_site: Any, tmp_path: Path) -> tuple[str, Path]:
    name = plugin_site.unique("held")
    plugin_site.install(name, source=HELD_IMPORT + plugin_source(name, body=HOOK))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name, mode="sandbox")],
                          '[sandbox]\nstart_timeout_s = 120\n'
                          '[web]\nrate_limit = "1000/minute"\n')
    first = create_app(config)  # no record yet: the build starts the worker, records it
    first.extensions["dihya"].close()
    return name, config


def test_server_start_and_listing_wait_for_no_worker(plugin_site, tmp_path: Path) -> None:
    name, config = _setup(plugin_site, tmp_path)
    hold = plugin_site.site / "hold"
    hold.touch()  # from now on a worker of the plugin cannot finish loading it
    api = Api(create_app(config), {})  # returns although no worker can load the plugin
    state = api.app.extensions["dihya"]
    try:
        (row,) = [r for r in api.get("/api/v1/plugins").get_json() if r["name"] == name]
        assert (row["status"], row["hooks"]) == ("active", ["after_generation"])
        assert row["isolation"], "the isolation of the worker that checked it is shown"
        assert state.pool.running() == {}
        hold.unlink()  # the background start goes on; a generation gets the warm worker
        body = api.post("/api/v1/generate", json={"needs": TODO}).get_json()
        assert body["files"]["ran.txt"] == "yes"
        assert list(state.pool.running()) == [name]
    finally:
        hold.unlink(missing_ok=True)
        state.close()


def test_a_worker_that_no_longer_starts_is_reported_failed(plugin_site,
                                                           tmp_path: Path) -> None:
    name, config = _setup(plugin_site, tmp_path)
    (plugin_site.site / "break").touch()  # the same files, but the import now fails
    api = Api(create_app(config), {})
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    try:
        def failed() -> Any:
            rows = {r["name"]: r for r in api.get("/api/v1/plugins").get_json()}
            return rows[name] if rows[name]["status"] == "failed" else None

        row = _until(failed, "the background start's failure never reached the listing")
        assert row["reason"] == "import-error" and "broken on purpose" in row["message"]
        # and it stays failed: every build starts it again instead of reading the record
        assert state.reload().get(name).status == "failed"
    finally:
        state.close()
