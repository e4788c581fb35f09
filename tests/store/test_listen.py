"""State changes reach other workers: PostgreSQL notifies, every backend is polled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dihya.store import Store
from dihya.store.listen import open_listener
from dihya.web.state import DihyaState
from support.site import PluginSite


def test_a_bump_wakes_a_listener_of_the_same_store_only(store: Store, store_url: str) -> None:
    listener = open_listener(store)
    if store.is_sqlite:
        assert listener is None  # SQLite: the version is polled
        return
    assert listener is not None
    try:
        assert listener.wait(0.2) is False  # nothing happened
        other_node = Store(store_url)
        other_node.set_plugin_disabled("x", True, reason="from another node")
        assert listener.wait(10) is True, "no notification for a switch on another node"
        other_node.bump_state_version()
        assert listener.wait(10) is True, "no notification for a reload on another node"
        other_node.engine.dispose()
    finally:
        listener.close()


def test_a_store_in_another_schema_does_not_wake_the_listener(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("notifications are PostgreSQL's")
    from support.postgres import fresh_schema_url

    listener = open_listener(store)
    assert listener is not None
    try:
        with fresh_schema_url() as other_url:
            other = Store(other_url, create=True)
            other.bump_state_version()
            assert listener.wait(0.5) is False
            other.engine.dispose()
    finally:
        listener.close()


def test_the_background_reloader_sees_a_switch_from_another_node(
        store_url: str, tmp_path: Path, plugin_site: PluginSite) -> None:
    """On both backends: a switch made through another store handle (another node) reaches
    a running app's snapshot within 1 s (polling every 0.25 s; PostgreSQL notifies)."""
    site = plugin_site
    name = site.unique("node")
    site.install(name)
    entry = site.entry(name)
    config = tmp_path / "dihya.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\n\n[[plugins.allow]]\nname = "{name}"\n'
        f'distribution = "{entry.distribution}"\nversion = "{entry.version}"\n'
        f'fingerprint = "{entry.fingerprint}"\nmode = "in-process"\n')
    state = DihyaState(config, version_ttl_s=0.25, background=True)
    try:
        assert state.snapshot().get(name).active
        other_node = Store(store_url)
        delays = []
        for disabled in (True, False, True):
            other_node.set_plugin_disabled(name, disabled, reason="from node B")
            start = time.monotonic()
            while (state.snapshot().get(name).active == disabled
                   and time.monotonic() - start < 5):
                time.sleep(0.005)
            delays.append(time.monotonic() - start)
            assert state.snapshot().get(name).active != disabled
            assert delays[-1] < 1.0, f"the switch took {delays[-1]:.2f} s to reach the app"
        print(f"propagation delays ({state.store.engine.dialect.name}):",
              [f"{d * 1000:.0f} ms" for d in delays])
        other_node.engine.dispose()
    finally:
        state.close()
