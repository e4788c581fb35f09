"""`plugins list` reads the kill switches of an ordinary SQLite store with `sqlite3`,
read-only, without SQLAlchemy (`dihya.store.quickread`), when no approval is in sandbox
mode. What a user sees must not depend on which path read the store:

- the listing through the read-only path is byte for byte the listing through `Store`,
  with plugins switched off by another process (an admin's switch, a quarantine) shown
  disabled with their reason code and reason, and switched on again when reset;
- a store that is corrupt, of another schema version, replaced (another store id) or
  missing where the store marker says one was gives the same exit code and words as
  before (the read-only path never decides an error: it hands over to `Store`);
- the read-only path writes nothing, and its URL parsing and the marker's naming of a
  store are SQLAlchemy's, character for character;
- importing the store package or its light modules, and such a listing in a fresh
  process, import neither SQLAlchemy nor `dihya.store.db`, nor the modules of the
  commands it does not run (not timed).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dihya.cli import main
from dihya.cli._common import State
from dihya.store import Store, sqlite_path, sqlite_url
from dihya.store.marker import store_location
from dihya.store.quickread import plain_sqlite_path, read_listing_state

ROOT = Path(__file__).resolve().parents[2]


def _cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def _both(config: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The command's (exit code, output), asserted the same through `Store` alone."""
    quick = _cli(config, *args)
    with monkeypatch.context() as m:
        m.setattr(State, "switches_read_only", lambda _self, _config: None)
        full = _cli(config, *args)
    assert quick == full
    return quick


def _listing(plugin_site: Any, tmp_path: Path) -> tuple[Path, list[str]]:
    """Two plugins approved in-process by the CLI (which creates the store and writes the
    approvals' audit events)."""
    names = [plugin_site.unique("q") for _ in range(2)]
    for name in names:
        plugin_site.install(name)
    config = tmp_path / "dihya.toml"
    config.write_text("[plugins]\n")
    for name in names:
        code, out = _cli(config, "plugins", "approve", name, "--mode", "in-process")
        assert code == 0, out
    assert (tmp_path / "dihya.sqlite3").is_file()
    return config, names


def _rows(out: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(out)}


def test_switches_set_by_another_process_are_listed_the_same_by_both_paths(
        plugin_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, (first, second) = _listing(plugin_site, tmp_path)
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    assert code == 0 and {_rows(out)[n]["status"] for n in (first, second)} == {"active"}
    url = sqlite_url(tmp_path / "dihya.sqlite3")
    # another process's writes: an admin's switch and a quarantine
    other = Store(url)
    assert other.set_plugin_disabled(first, True, reason="off for the test", actor="ops")
    assert other.set_plugin_disabled(second, True, reason_code="quarantined")
    other.engine.dispose()
    assert read_listing_state(tmp_path / "dihya.sqlite3") is not None  # the read-only path
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    rows = _rows(out)
    assert code == 0
    assert (rows[first]["status"], rows[first]["reason"]) == ("disabled", "disabled-by-admin")
    assert (rows[second]["status"], rows[second]["reason"]) == ("disabled", "quarantined")
    for args in (("plugins", "list"), ("plugins", "show", first),
                 ("plugins", "show", second, "--json")):
        code, out = _both(config, monkeypatch, *args)
        assert code == 0, out
    assert "off for the test" in _both(config, monkeypatch, "plugins", "show", first)[1]
    again = Store(url)
    assert again.set_plugin_disabled(first, False)  # reset: listed active again
    again.engine.dispose()
    rows = _rows(_both(config, monkeypatch, "plugins", "list", "--json")[1])
    assert rows[first]["status"] == "active" and rows[second]["status"] == "disabled"


def test_a_broken_store_gives_the_same_error_through_both_paths(
        plugin_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, _names = _listing(plugin_site, tmp_path)
    path = tmp_path / "dihya.sqlite3"
    saved = tmp_path / "saved.sqlite3"  # a consistent copy, WAL included
    with sqlite3.connect(path) as src, sqlite3.connect(saved) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    good = saved.read_bytes()
    # a newer schema than this core's: never read as if it were this one
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE dihya_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    assert read_listing_state(path) is None
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    assert code != 0 and "99" in out, out
    # replaced behind dihya's back: another store id than the marker records
    for leftover in tmp_path.glob("dihya.sqlite3*"):
        leftover.unlink()
    Store(sqlite_url(path), create=True).ensure_schema()
    assert read_listing_state(path) is not None  # readable, but not the store the marker says
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    assert code == 1 and "is not the one" in out and "replaced or recreated" in out, out
    # corrupt: garbage where the store was
    for leftover in tmp_path.glob("dihya.sqlite3*"):
        leftover.unlink()
    path.write_bytes(b"not a database at all, " * 200)
    assert read_listing_state(path) is None
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    assert code == 1 and "Traceback" not in out, out
    # missing where the marker says one was
    path.unlink()
    code, out = _both(config, monkeypatch, "plugins", "list", "--json")
    assert code == 1 and "is missing" in out and ".dihya.toml.store-marker.json" in out, out
    assert not path.exists()  # and nothing created
    path.write_bytes(good)  # put back: listed again
    assert _both(config, monkeypatch, "plugins", "list", "--json")[0] == 0


def test_a_sandbox_mode_approval_takes_the_store_path(tmp_path: Path) -> None:
    """Listing a sandboxed plugin reads and writes what its worker said (the facts): the
    read-only path is not taken."""
    config = tmp_path / "dihya.toml"
    config.write_text("[plugins]\n[[plugins.allow]]\nname = \"x\"\ndistribution = \"x\"\n"
                      "version = \"1\"\nfingerprint = \"sha256:" + "0" * 64 + "\"\n")
    Store(sqlite_url(tmp_path / "dihya.sqlite3"), create=True).ensure_schema()
    state = State(config)
    assert state.switches_read_only(state.config()) is None
    config.write_text(config.read_text() + "mode = \"in-process\"\n")
    assert State(config).switches_read_only(State(config).config()) == {}


def test_the_read_only_path_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dihya.sqlite3"
    store = Store(sqlite_url(path), create=True)
    store.ensure_schema()
    store.set_plugin_disabled("p", True, reason="r")
    store.engine.dispose()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    wal = path.with_name(path.name + "-wal")
    wal_before = wal.read_bytes() if wal.exists() else b""
    state = read_listing_state(path)
    assert state is not None and state.switches == {"p": ("disabled-by-admin", "r")}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    # SQLite may open an empty write-ahead log (and its shared-memory index) beside the
    # file for a reader: no data is written
    assert (wal.read_bytes() if wal.exists() else b"") in (wal_before, b"")
    assert read_listing_state(tmp_path / "absent.sqlite3") is None
    assert not (tmp_path / "absent.sqlite3").exists()


def test_urls_are_read_and_named_as_sqlalchemy_does() -> None:
    paths = ["/a/b c/d.sqlite3", "rel/x.db", "/a/b+c~d_e-f.g", "/srv/dihya/dihya.sqlite3",
             *(f"/a/x{chr(c)}y" for c in range(32, 127)), "/a/é", "/a/b%20c", "/a/b?mode=ro",
             "file:/a/b", ":memory:", "/a/b\nc", "/a/@x:y/d"]
    for raw in paths:
        url = "sqlite:///" + raw
        plain = plain_sqlite_path(url)
        rendered = sa.engine.make_url(url).render_as_string(hide_password=True)
        assert store_location(url) == rendered, url
        if plain is not None:  # the read-only path opens the file `Store` opens
            assert rendered == url and plain == sqlite_path(url), url
    assert plain_sqlite_path("sqlite:///") is None
    assert plain_sqlite_path("postgresql+psycopg://u:p@h/db") is None


def test_a_listing_imports_no_sqlalchemy(plugin_site: Any, tmp_path: Path) -> None:
    """Not timed: which modules a fresh process imports, with and without a store."""
    config, names = _listing(plugin_site, tmp_path)
    disabled = Store(sqlite_url(tmp_path / "dihya.sqlite3"))
    disabled.set_plugin_disabled(names[0], True, reason="by another process")
    disabled.engine.dispose()
    probe = ("import sys\n"
             "import dihya.store, dihya.store.marker, dihya.store.quickread, "
             "dihya.store.faults\n"
             "assert 'sqlalchemy' not in sys.modules\n"
             "from dihya.cli import main\n"
             "sys.argv = ['dihya', '--config', sys.argv[1], 'plugins', 'list', '--json']\n"
             "try:\n    main()\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print(sorted(m for m in ('sqlalchemy', 'dihya.store.db', "
             "'dihya.cli.approve', 'dihya.cli.publish', 'dihya.cli.doctor', "
             "'dihya.config.edit', 'packaging.requirements', 'packaging.markers', "
             "'packaging.utils', 'difflib', 'getpass', 'rich', 'tomlkit') "
             "if m in sys.modules), file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(plugin_site.site), str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]))
    for cfg in (config, tmp_path / "nostore" / "dihya.toml"):
        cfg.parent.mkdir(exist_ok=True)
        if not cfg.exists():
            cfg.write_text(config.read_text())
        done = subprocess.run([sys.executable, "-c", probe, str(cfg)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
        rows = _rows(done.stdout)
        assert set(names) <= set(rows)
        expected = "disabled" if cfg == config else "active"
        assert rows[names[0]]["status"] == expected
