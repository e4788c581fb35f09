"""Reloading a running app: new plugins appear, switches propagate, warm workers survive."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from test_api import TODO, Api, write_config

from dihya.config import ConfigError
from dihya.store import Store
from dihya.web import create_app
from support.wheels import plugin_source

PID_HOOK = ("\ndef after_generation(self, code, needs):\n"
            "    code['instance.txt'] = INSTANCE\n    return code\n")


@pytest.fixture
def sandboxed_api(plugin_site, tmp_path: Path):
    name = plugin_site.unique("warm")
    plugin_site.install(name, source=plugin_source(name, body=PID_HOOK))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name, mode="sandbox")],
                          '[web]\nrate_limit = "1000/minute"\n')
    api = Api(create_app(config), {"warm": name})
    yield api
    api.app.extensions["dihya"].close()


def instance(api: Api) -> str:
    body = api.post("/api/v1/generate", json={"needs": TODO}).get_json()
    return str(body["files"]["instance.txt"])


def test_reload_finds_a_newly_installed_plugin(plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [])
    api = Api(create_app(config), {})
    name = plugin_site.unique("late")
    plugin_site.install(name)
    assert name not in {r["name"] for r in api.get("/api/v1/plugins").get_json()}
    assert api.post("/api/v1/plugins/reload", "developer").status_code == 403
    response = api.post("/api/v1/plugins/reload", "admin")
    rows = {r["name"]: r for r in response.get_json()}
    assert (rows[name]["status"], rows[name]["reason"]) == ("refused", "not-allowlisted")
    # approving it (an edit of the config file) makes it active without a restart
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    time.sleep(0.01)
    write_config(state.config_path, [plugin_site.entry(name)])
    assert api.get(f"/api/v1/plugins/{name}").get_json()["status"] == "active"


def test_background_reloader_follows_another_node(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique("bg")
    plugin_site.install(name)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])
    app = create_app(config, background_reload=True)
    state = app.extensions["dihya"]
    try:
        other_node = Store(state.config.effective_store_url)
        other_node.set_plugin_disabled(name, True, reason="from node B")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and state.snapshot().get(name).active:
            time.sleep(0.02)
        record = state.snapshot().get(name)
        assert (record.status, record.reason) == ("disabled", "disabled-by-admin")
    finally:
        state.close()
    assert not state._reloader.is_alive()


def test_reload_keeps_the_warm_worker_of_an_unchanged_plugin(sandboxed_api: Api,
                                                            plugin_site) -> None:
    first = instance(sandboxed_api)
    assert sandboxed_api.post("/api/v1/plugins/reload", "admin").status_code == 200
    assert instance(sandboxed_api) == first, "an unchanged plugin's worker was restarted"
    # an upgrade (new files, new fingerprint) gets a new worker once re-approved
    name = sandboxed_api.plugins["warm"]
    plugin_site.install(name, version="1.0.1",
                        source=plugin_source(name, version="1.0.1", body=PID_HOOK))
    state = sandboxed_api.app.extensions["dihya"]
    time.sleep(0.01)
    write_config(state.config_path, [plugin_site.entry(name, mode="sandbox")],
                 '[web]\nrate_limit = "1000/minute"\n')
    state.version_ttl_s = 0.0
    rows = {r["name"]: r for r in sandboxed_api.get("/api/v1/plugins").get_json()}
    assert (rows[name]["status"], rows[name]["version"]) == ("active", "1.0.1")
    assert instance(sandboxed_api) != first
    assert json.dumps(rows[name]).count("1.0.1") >= 1


VERSION_HOOK = ("\ndef after_generation(self, code, needs):\n"
                "    code['instance.txt'] = INSTANCE + ' ' + self.version\n    return code\n")


def test_an_upgraded_in_process_plugin_is_imported_afresh(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique("inproc")
    module = "dihya_plugin_" + name
    plugin_site.install(name, source=plugin_source(name, body=VERSION_HOOK))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])
    api = Api(create_app(config), {})
    state = api.app.extensions["dihya"]
    try:
        first = instance(api)
        old_module = sys.modules[module]
        assert first.endswith(" 1.0.0")
        assert api.post("/api/v1/plugins/reload", "admin").status_code == 200
        assert instance(api) == first, "an unchanged in-process plugin was imported again"

        plugin_site.install(name, version="1.0.1",
                            source=plugin_source(name, version="1.0.1", body=VERSION_HOOK))
        rows = {r["name"]: r for r in api.post("/api/v1/plugins/reload", "admin").get_json()}
        assert (rows[name]["status"], rows[name]["reason"]) == ("refused", "version-mismatch")
        assert module not in sys.modules, "a refused upgrade left the old module imported"
        time.sleep(0.01)
        write_config(state.config_path, [plugin_site.entry(name)])  # re-approved
        assert api.post("/api/v1/plugins/reload", "admin").status_code == 200
        second = instance(api)
        assert second.endswith(" 1.0.1") and second.split()[0] != first.split()[0]
        assert sys.modules[module] is not old_module

        # removed: it disappears, and so do its modules
        for path in [*plugin_site.site.glob(f"{module}-*.dist-info"), plugin_site.site / module]:
            shutil.rmtree(path)
        rows = {r["name"]: r for r in api.post("/api/v1/plugins/reload", "admin").get_json()}
        assert name not in rows
        assert module not in sys.modules
    finally:
        state.close()


def test_a_fixed_plugin_loads_after_a_failed_import(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique("fixme")
    broken = plugin_source(name, body="\ndef before_generation(self, needs, extra):\n"
                                      "    return needs\n")
    plugin_site.install(name, source=broken)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])
    api = Api(create_app(config), {})
    state = api.app.extensions["dihya"]
    try:
        row = api.get(f"/api/v1/plugins/{name}").get_json()
        assert (row["status"], row["reason"]) == ("failed", "invalid-plugin")
        plugin_site.install(name, version="1.0.1", source=plugin_source(name, version="1.0.1"))
        time.sleep(0.01)
        write_config(state.config_path, [plugin_site.entry(name)])
        rows = {r["name"]: r for r in api.post("/api/v1/plugins/reload", "admin").get_json()}
        assert (rows[name]["status"], rows[name]["version"]) == ("active", "1.0.1")
    finally:
        state.close()


def wait_for(predicate, timeout: float = 60.0) -> float:
    """Seconds until `predicate()` held (polled every 10 ms); fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "the condition never held"
        time.sleep(0.01)
    return time.monotonic() - start


def test_auto_reload_notices_installs_upgrades_and_removals(plugin_site,
                                                            tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [], plugins="auto_reload = true")
    app = create_app(config, background_reload=True)
    state = app.extensions["dihya"]
    try:
        name = plugin_site.unique("auto")
        plugin_site.install(name)  # no reload call, no config edit
        wait_for(lambda: state.snapshot().get(name) is not None)
        assert state.snapshot().get(name).reason == "not-allowlisted"

        write_config(config, [plugin_site.entry(name)], plugins="auto_reload = true")
        wait_for(lambda: state.snapshot().get(name).active)
        plugin_site.install(name, version="1.0.1", source=plugin_source(name, version="1.0.1"))
        # (the old files go first, so a rebuild may see no plugin for a moment)
        wait_for(lambda: getattr(state.snapshot().get(name), "version", None) == "1.0.1")
        assert state.snapshot().get(name).reason == "version-mismatch"

        module = "dihya_plugin_" + name
        for path in [*plugin_site.site.glob(f"{module}-*.dist-info"), plugin_site.site / module]:
            shutil.rmtree(path)
        wait_for(lambda: state.snapshot().get(name) is None)
    finally:
        state.close()


def test_without_auto_reload_an_install_waits_for_a_reload(plugin_site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "dihya.toml", [])
    app = create_app(config, background_reload=True)
    state = app.extensions["dihya"]
    try:
        name = plugin_site.unique("manual")
        plugin_site.install(name)
        time.sleep(1.0)  # four checks of the background reloader
        assert state.snapshot().get(name) is None
        state.reload()
        assert state.snapshot().get(name).reason == "not-allowlisted"
    finally:
        state.close()


def test_every_rebuild_honours_dihya_plugins_disable(plugin_site, tmp_path: Path,
                                                     monkeypatch) -> None:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    name = plugin_site.unique("envoff")
    plugin_site.install(name)
    api = Api(create_app(write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])), {})
    state = api.app.extensions["dihya"]
    try:
        assert state.snapshot().get(name).active
        monkeypatch.setenv("DIHYA_PLUGINS_DISABLE", name)
        rows = {r["name"]: r for r in api.post("/api/v1/plugins/reload", "admin").get_json()}
        assert (rows[name]["status"], rows[name]["reason"]) == ("disabled", "disabled-by-env")
        # an admin enable cannot override the operator's environment
        assert api.post(f"/api/v1/plugins/{name}/enable", "admin").status_code == 409
    finally:
        state.close()


def test_a_generation_never_waits_for_a_rebuild(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique("busy")
    plugin_site.install(name)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])
    api = Api(create_app(config, background_reload=True), {})
    state = api.app.extensions["dihya"]
    answers: list = []
    try:
        with state._lock:  # what a long rebuild (new sandbox workers starting) holds
            client = threading.Thread(target=lambda: answers.append(
                api.post("/api/v1/generate", json={"needs": TODO})))
            client.start()
            client.join(timeout=20)
            assert not client.is_alive(), "a generation waited for the rebuild to finish"
        assert answers[0].status_code == 200
        ran = {p["name"] for p in answers[0].get_json()["report"]["plugins"]
               if p["status"] == "ok"}
        assert name in ran
    finally:
        state.close()


def _break_config(path: Path, how: str) -> None:
    if how == "empty":
        path.write_text("")
    elif how == "comments":
        path.write_text("# nothing else\n")
    elif how == "deleted":
        path.unlink()
    elif how == "directory":  # unreadable, whatever the user (root reads any mode)
        path.unlink()
        path.mkdir()
    elif how == "malformed":
        path.write_text("[plugins\n")
    elif how == "duplicate":
        text = path.read_text()
        path.write_text(text + text[text.index("[[plugins.allow]]"):])
    elif how == "dropped":
        path.write_text("[plugins]\nhook_timeout_s = 2.0\n")


@pytest.mark.parametrize(("how", "reason"), [
    ("empty", "empty-config"), ("comments", "empty-config"), ("deleted", "missing-config"),
    ("directory", "unreadable-config"), ("malformed", "invalid-config"),
    ("duplicate", "invalid-config"), ("dropped", "allowlist-dropped"),
])
def test_a_config_gone_bad_keeps_the_last_good_one_and_readyz_says_why(
        plugin_site, tmp_path: Path, how: str, reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    name = plugin_site.unique("lastgood")
    plugin_site.install(name, source=plugin_source(name, body=PID_HOOK))
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)])
    good = config.read_text()
    api = Api(create_app(config), {})
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    try:
        assert api.client.get("/readyz").status_code == 200
        time.sleep(0.01)  # a distinct mtime
        with caplog.at_level(logging.INFO, logger="dihya"):
            _break_config(config, how)
            ready = api.client.get("/readyz")
        body = ready.get_json()
        assert (ready.status_code, body["checks"]["config"]) == (503, False)
        assert body["config_problem"]["reason"] == reason
        assert "the last good config keeps serving" in body["config_problem"]["message"]
        assert str(tmp_path) not in ready.get_data(as_text=True)  # no path for anonymous callers
        assert "instance.txt" in api.post("/api/v1/generate", json={"needs": TODO}).get_json()[
            "files"], "the last good allowlist no longer runs"
        logged = [(r.levelname, getattr(r, "reason", None)) for r in caplog.records]
        assert ("ERROR", reason) in logged
        if config.is_dir():
            config.rmdir()
        config.write_text(good)
        ready = api.client.get("/readyz")
        assert (ready.status_code, ready.get_json()["config_problem"]) == (200, None)
    finally:
        state.close()


def test_a_server_started_without_a_usable_config_is_not_ready(plugin_site,
                                                                tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text("\n")
    api = Api(create_app(config), {})
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    try:
        body = api.client.get("/readyz").get_json()
        assert body["config_problem"] == {
            "reason": "empty-config", "message": "the config file is empty (no table, no key); "
            "no good config was loaded yet: no plugin is approved"}
        time.sleep(0.01)
        config.write_text("[plugins]\n")
        assert api.client.get("/readyz").status_code == 200
    finally:
        state.close()


def test_a_worker_booted_on_a_broken_config_takes_the_boot_settings_with_nothing_approved(
        plugin_site, tmp_path: Path) -> None:
    """What `dihya serve` gives a worker gunicorn restarts while the file is broken: the
    settings it validated at start (the store above all), no approval, /readyz 503."""
    from dihya.config import load_config

    name = plugin_site.unique("boot")
    plugin_site.install(name)
    store = tmp_path / "elsewhere.sqlite3"
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(name)],
                          f'[store]\nurl = "sqlite:///{store}"\n')
    good = config.read_text()
    boot = load_config(config)
    config.write_text("[plugins\n")
    with pytest.raises(ConfigError):
        create_app(config)  # no boot config: an error, as before
    api = Api(create_app(config, boot_config=boot), {})
    state = api.app.extensions["dihya"]
    state.version_ttl_s = 0.0
    try:
        assert state.config.effective_store_url == f"sqlite:///{store}"
        body = api.client.get("/readyz").get_json()
        assert body["config_problem"] == {
            "reason": "invalid-config", "message": "the config file is malformed or invalid "
            "(`dihya plugins list` names the line); no good config was loaded yet: no plugin "
            "is approved"}
        assert state.snapshot().get(name).reason == "not-allowlisted"
        time.sleep(0.01)
        config.write_text(good)
        assert api.client.get("/readyz").status_code == 200
        assert state.snapshot().get(name).active
    finally:
        state.close()
