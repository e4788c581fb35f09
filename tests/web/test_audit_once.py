"""Plugin events are audited once per change, not once per server worker start
(`dihya.store.seen`): workers sharing a store start with nothing new to say."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from test_api import write_config

from dihya.web import create_app


def _plugin_events(app: Any, names: tuple[str, ...]) -> Counter[tuple[str, str]]:
    """Events about `names` (the bundled plugins are installed here too)."""
    rows = app.extensions["dihya"].auditor.log.rows()
    return Counter((r["type"], r["plugin"]) for r in rows
                   if r["type"].startswith("plugin.") and r.get("plugin") in names)


def test_worker_starts_audit_each_change_once(plugin_site, tmp_path: Path) -> None:
    approved, other = plugin_site.unique("ok"), plugin_site.unique("other")
    for name in (approved, other):
        plugin_site.install(name)
    mine = (approved, other)
    config = write_config(tmp_path / "dihya.toml", [plugin_site.entry(approved)])
    first = create_app(config)
    events = _plugin_events(first, mine)
    assert events == {("plugin.discovered", approved): 1, ("plugin.discovered", other): 1,
                      ("plugin.refused", other): 1}
    # more workers start on the same store (two at once, as gunicorn starts them): nothing
    # changed, nothing is recorded
    apps = [create_app(config, create_store=False) for _ in range(2)]
    assert _plugin_events(first, mine) == events
    # a change: the refused plugin is approved; then a rebuild in every worker
    write_config(tmp_path / "dihya.toml", [plugin_site.entry(approved),
                                          plugin_site.entry(other)])
    for app in (first, *apps):
        app.extensions["dihya"].reload()
    assert _plugin_events(first, mine) == events  # approved: no plugin.* event from the build
    # another change: the approved plugin upgraded without approval -> refused, once
    plugin_site.install(approved, version="2.0.0")
    for app in (first, *apps):
        app.extensions["dihya"].reload()
    after = _plugin_events(first, mine) - events
    assert after == {("plugin.discovered", approved): 1, ("plugin.refused", approved): 1}
    for app in (first, *apps):
        app.extensions["dihya"].close()
