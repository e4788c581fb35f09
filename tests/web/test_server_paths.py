"""What the API and the console tell a non-admin about the server's files: names, not paths.

Real plugins installed from wheels into a private site directory, a config file in a
directory whose name holds a space; the gate's messages name both with absolute paths (a
plugin not in the allowlist of the config file, a plugin shadowed by a file in the site
directory, a hook failing on a file of its own). A `viewer` or `developer` token, and a
viewer's console session, must see none of those directories, only the file names; an
admin sees them whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from dihya.store.tokens import create_token
from dihya.web import create_app
from support.console import Console
from support.wheels import build_wheel, pip_install, plugin_source
from web.test_api import TODO, write_config

FAILS_ON_A_FILE = '''
def after_generation(self, code, needs):
    import os
    open(os.path.join(os.path.dirname(__file__), "missing-data.txt"))
    return code
'''


class Server:
    def __init__(self, app: Any, plugins: dict[str, str], config: Path, site: Path) -> None:
        self.app = app
        self.plugins = plugins
        self.config = config
        self.site = site
        store = app.extensions["dihya"].store
        self.tokens = {role: create_token(store, f"{role}-user", role)
                       for role in ("admin", "developer", "viewer")}

    def api(self, method: str, url: str, role: str, **kw: Any) -> Any:
        return getattr(self.app.test_client(), method)(
            url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, **kw)

    def console(self, role: str) -> Console:
        console = Console(self.app)
        assert console.sign_in(self.tokens[role]).status_code == 303
        return console

    def secrets(self) -> list[str]:
        """The absolute directories no non-admin answer may hold."""
        return [str(self.config.parent), str(self.site), str(self.site.parent)]


@pytest.fixture
def server(plugin_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.delenv("DIHYA_PLUGINS_DISABLE", raising=False)
    names = {"failing": plugin_site.unique("failing"), "stranger": plugin_site.unique("strg"),
             "shadowed": plugin_site.unique("shdw")}
    plugin_site.install(names["failing"], source=plugin_source(names["failing"],
                                                               body=FAILS_ON_A_FILE))
    plugin_site.install(names["stranger"])  # installed, never approved
    # a top-level module plugin, then a package of the same name beside it (found first)
    module = f"mod_{names['shadowed']}"
    wheel = build_wheel(plugin_site.wheels, f"dihya-plugin-{names['shadowed']}", "1.0.0",
                        {f"{module}.py": plugin_source(names["shadowed"])},
                        {names["shadowed"]: f"{module}:Plugin"})
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    entries = [plugin_site.entry(names["failing"]), plugin_site.entry(names["shadowed"])]
    (plugin_site.site / module).mkdir()
    (plugin_site.site / module / "__init__.py").write_text(plugin_source(names["shadowed"]))
    where = tmp_path / "etc dihya"
    where.mkdir()
    config = write_config(where / "dihya.toml", entries,
                          '[web]\nrate_limit = "1000/minute"\n[audit]\nkey = "test-key"\n')
    return Server(create_app(config), names, config, plugin_site.site)


def rows_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_the_fixture_messages_do_name_the_server_paths(server: Server) -> None:
    """What an admin sees: the gate's messages with the absolute paths (the operator
    needs them), so the tests below hide something real."""
    rows = rows_by_name(server.api("get", "/api/v1/plugins", "admin").get_json())
    stranger = rows[server.plugins["stranger"]]
    assert stranger["reason"] == "not-allowlisted"
    assert f"not in the allowlist of {server.config};" in stranger["message"]
    shadowed = rows[server.plugins["shadowed"]]
    assert shadowed["reason"] == "shadowed-module"
    assert str(server.site / f"mod_{server.plugins['shadowed']}" / "__init__.py") \
        in shadowed["message"]
    one = server.api("get", f"/api/v1/plugins/{server.plugins['stranger']}", "admin")
    assert str(server.config) in one.get_json()["message"]
    report = server.api("post", "/api/v1/generate", "admin", json={"needs": TODO}).get_json()
    failed = [h for h in report["report"]["plugins"] if h["status"] == "failed"]
    assert failed and str(server.site) in failed[0]["detail"]


@pytest.mark.parametrize("role", ["viewer", "developer"])
def test_non_admin_rows_name_files_without_their_directories(server: Server,
                                                             role: str) -> None:
    admin_rows = rows_by_name(server.api("get", "/api/v1/plugins", "admin").get_json())
    listing = server.api("get", "/api/v1/plugins", role)
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    for secret in server.secrets():
        assert secret not in text and json.dumps(secret)[1:-1] not in text
    rows = rows_by_name(listing.get_json())
    # the same rows and fields; only the texts lose their directories
    assert rows.keys() == admin_rows.keys()
    for name, row in rows.items():
        assert set(row) == set(admin_rows[name])
        assert {k: v for k, v in row.items() if k not in ("message", "warnings")} == \
            {k: v for k, v in admin_rows[name].items() if k not in ("message", "warnings")}
    stranger = rows[server.plugins["stranger"]]["message"]
    assert stranger.startswith("not in the allowlist of dihya.toml; approve it with")
    module = f"mod_{server.plugins['shadowed']}"
    shadowed = rows[server.plugins["shadowed"]]["message"]
    assert f"{module}/__init__.py" in shadowed and f"{module}.py" in shadowed
    for name in server.plugins.values():
        one = server.api("get", f"/api/v1/plugins/{name}", role)
        assert one.status_code == 200 and one.get_json() == rows[name]


def test_a_developers_generation_report_names_no_server_directory(server: Server) -> None:
    response = server.api("post", "/api/v1/generate", "developer", json={"needs": TODO})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    for secret in server.secrets():
        assert secret not in text
    (failed,) = [h for h in response.get_json()["report"]["plugins"]
                 if h["status"] == "failed"]
    assert failed["name"] == server.plugins["failing"]
    assert failed["detail"].startswith("FileNotFoundError:") and \
        "missing-data.txt" in failed["detail"]


@pytest.mark.parametrize("role", ["viewer", "developer"])
def test_non_admins_reach_no_other_answer_with_paths(server: Server, role: str) -> None:
    """The answers that do carry paths whole are an admin's only: the switches, the
    reload, a plugin's own log records."""
    name = server.plugins["stranger"]
    for method, url in (("get", f"/api/v1/plugins/{name}/logs"),
                        ("post", f"/api/v1/plugins/{name}/disable"),
                        ("post", f"/api/v1/plugins/{name}/enable"),
                        ("post", "/api/v1/plugins/reload")):
        response = server.api(method, url, role)
        assert response.status_code == 403, url
        for secret in server.secrets():
            assert secret not in response.get_data(as_text=True)
    # an admin's switch answers with the row as the admin sees it
    reloaded = server.api("post", "/api/v1/plugins/reload", "admin").get_json()
    assert str(server.config) in rows_by_name(reloaded)[name]["message"]


def test_a_viewer_session_sees_file_names_and_an_admin_the_paths(server: Server) -> None:
    names = server.plugins
    pages = ["/admin/plugins", "/admin/live/plugins", "/admin/health",
             *(f"/admin/plugins/{n}" for n in names.values()),
             *(f"/admin/live/plugins/{n}" for n in names.values())]
    viewer = server.console("viewer")
    for url in pages:
        response = viewer.get(url)
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        for secret in server.secrets():
            assert secret not in html, url
    stranger = viewer.get(f"/admin/plugins/{names['stranger']}").get_data(as_text=True)
    assert "not in the allowlist of dihya.toml" in stranger
    admin = server.console("admin")
    page = admin.get(f"/admin/plugins/{names['stranger']}").get_data(as_text=True)
    assert str(server.config) in page
    page = admin.get(f"/admin/plugins/{names['shadowed']}").get_data(as_text=True)
    assert str(server.site) in page
