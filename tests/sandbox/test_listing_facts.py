"""Listing sandbox-mode plugins starts no worker: what a worker said when it checked the plugin
is recorded by fingerprint (`dihya.store.facts`) and read back, on real installed wheels."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sandbox_support import hook

from dihya.pipeline import run_generation
from dihya.registry import build_registry
from dihya.store import Store, plugin_facts_table, sqlite_url
from dihya.store.facts import recall_facts, record_facts
from support.wheels import PASS_THROUGH_HOOKS, plugin_source

ACTION = '''
from dihya import action

@action("shout", input_schema={"type": "object", "properties": {"text": {"type": "string"}}})
def shout(self, payload):
    return {"text": payload.get("text", "").upper()}

def before_generation(self, needs):
    return needs
'''
AFTER_ONLY = hook('code["mark.txt"] = "x"\nreturn code')

_spawned: list[str] | None = None  # the plugins whose workers were started, while counting


def _count_workers(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: a worker's command line ends with its JSON spec (the plugin's name)."""
    if event != "subprocess.Popen" or _spawned is None:
        return
    for arg in args[1] or ():
        if isinstance(arg, str) and arg.startswith("{") and '"fingerprint"' in arg:
            _spawned.append(json.loads(arg)["name"])


sys.addaudithook(_count_workers)


@pytest.fixture
def spawned() -> Iterator[list[str]]:
    """The names of the plugins whose sandbox workers start during the test."""
    global _spawned
    _spawned = []
    try:
        yield _spawned
    finally:
        _spawned = None


def _site(plugin_site, bodies: dict[str, str]) -> tuple[Any, dict[str, str], Store]:
    names = {key: plugin_site.unique(key) for key in bodies}
    for key, body in bodies.items():
        plugin_site.install(names[key], source=plugin_source(names[key], body=body))
    config = plugin_site.config(*(plugin_site.entry(n, mode="sandbox") for n in names.values()))
    store = Store(sqlite_url(plugin_site.root / "dihya.sqlite3"), create=True)
    return config, names, store


def _listing(config: Any, plugin_site, store: Store | None) -> Any:
    snap = build_registry(config, path=plugin_site.path, facts=store, start_workers=False)
    return snap


def test_listing_starts_workers_once_then_never(plugin_site, needs, spawned) -> None:
    config, names, store = _site(plugin_site, {"act": ACTION, "after": AFTER_ONLY,
                                          "both": PASS_THROUGH_HOOKS})
    # approved before records existed: the first listing starts each worker once
    first = _listing(config, plugin_site, store)
    first.close()
    assert sorted(spawned) == sorted(names.values())
    spawned.clear()
    for _ in range(2):  # then never again
        snap = _listing(config, plugin_site, store)
        try:
            assert spawned == [], "a listing started a sandbox worker"
            assert snap.sandbox is not None and snap.sandbox.running() == {}
            assert [r.to_json() for r in snap.records] == [r.to_json() for r in first.records]
        finally:
            snap.close()
    act, after, both = (snap.get(names[k]) for k in ("act", "after", "both"))
    assert all(r.status == "active" and r.mode == "sandbox" for r in (act, after, both))
    assert act.hooks == ("before_generation",) and list(act.actions) == ["shout"]
    assert act.actions["shout"].input_schema["properties"] == {"text": {"type": "string"}}
    assert after.hooks == ("after_generation",) and not after.actions
    assert both.hooks == ("before_generation", "after_generation")
    assert act.description == "synthetic plugin" and act.author == "tests"
    assert act.isolation == first.get(names["act"]).isolation and act.isolation


def test_a_listed_plugin_runs_its_worker_at_the_first_call(plugin_site, needs,
                                                           spawned) -> None:
    config, names, store = _site(plugin_site, {"after": AFTER_ONLY})
    _listing(config, plugin_site, store).close()  # records
    spawned.clear()
    snap = _listing(config, plugin_site, store)
    try:
        assert spawned == []
        result = run_generation(needs, snap)
        assert result.files["mark.txt"] == "x"
        assert spawned == [names["after"]]
        run_generation(needs, snap)
        assert spawned == [names["after"]], "the worker was not kept warm"
    finally:
        snap.close()


def test_a_changed_fingerprint_never_uses_the_old_record(plugin_site, spawned) -> None:
    config, names, store = _site(plugin_site, {"p": AFTER_ONLY})
    name = names["p"]
    _listing(config, plugin_site, store).close()
    # the same version rebuilt with other hooks, and approved: another fingerprint
    plugin_site.install(name, source=plugin_source(name, body=ACTION))
    config = plugin_site.config(plugin_site.entry(name, mode="sandbox"))
    spawned.clear()
    snap = _listing(config, plugin_site, store)
    snap.close()
    assert spawned == [name]
    assert snap.get(name).hooks == ("before_generation",) and list(snap.get(name).actions)
    spawned.clear()
    again = _listing(config, plugin_site, store)
    again.close()
    assert spawned == [] and again.get(name).hooks == ("before_generation",)


def test_a_bad_record_is_not_used(plugin_site, spawned) -> None:
    config, names, store = _site(plugin_site, {"p": AFTER_ONLY})
    name = names["p"]
    fingerprint = plugin_site.entry(name).fingerprint
    bad: list[Any] = [{"meta": {"hooks": ["no_such_hook"]}, "layers": [], "warnings": []},
                      {"meta": "x"}, [1, 2]]
    for facts in bad:
        record_facts(store, config.group, name, fingerprint, facts)  # type: ignore[arg-type]
        spawned.clear()
        snap = _listing(config, plugin_site, store)
        snap.close()
        assert spawned == [name] and snap.get(name).hooks == ("after_generation",)
    # and the worker's answer replaced it
    assert recall_facts(store, config.group, [(name, fingerprint)])[(name, fingerprint)][
        "meta"]["hooks"] == ["after_generation"]


def test_a_worker_that_says_other_facts_than_recorded_is_not_used(plugin_site, needs,
                                                                  spawned) -> None:
    config, names, store = _site(plugin_site, {"p": AFTER_ONLY})
    name = names["p"]
    _listing(config, plugin_site, store).close()
    with store.begin() as conn:  # the record altered in the store: another description
        text = conn.execute(sa.select(plugin_facts_table.c.facts)).scalar_one()
        conn.execute(plugin_facts_table.update().values(
            facts=text.replace("synthetic plugin", "forged")))
    snap = _listing(config, plugin_site, store)
    try:
        assert snap.get(name).description == "forged"  # what the store says...
        result = run_generation(needs, snap)
        (outcome,) = result.plugins
        assert outcome.status != "ok" and "mark.txt" not in result.files  # ...never runs
        assert "other facts" in (outcome.detail or ""), outcome
    finally:
        snap.close()


def test_cli_listing_starts_no_worker(plugin_site, tmp_path: Path) -> None:
    """The real `dihya` command: approve (the check records the facts), then `plugins list`
    and `plugins show` start no worker; the count comes from an audit hook in that process."""
    names = [plugin_site.unique("cli") for _ in range(3)]
    for name in names:
        plugin_site.install(name, source=plugin_source(name, body=ACTION))
    config = tmp_path / "dihya.toml"
    counting = ("import json, sys\nseen = []\n"
                "def hook(event, args):\n"
                "    if event == 'subprocess.Popen':\n"
                "        seen.extend(a for a in (args[1] or ()) if isinstance(a, str)"
                " and a.startswith('{') and '\"fingerprint\"' in a)\n"
                "sys.addaudithook(hook)\n"
                "import atexit\n"
                "atexit.register(lambda: sys.stderr.write(f'WORKERS={len(seen)}\\n'))\n"
                "from dihya.cli import main\nmain()\n")
    env = {"PYTHONPATH": str(plugin_site.site), "PATH": "/usr/bin:/bin"}

    def dihya(*args: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", counting, "--config", str(config), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        workers = [line for line in done.stderr.splitlines() if line.startswith("WORKERS=")]
        return done.stdout, int(workers[-1].removeprefix("WORKERS="))

    _out, started = dihya("plugins", "approve", *names)
    assert started == len(names)  # the approval's checks
    out, started = dihya("plugins", "list", "--json")
    assert started == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert all(rows[n]["status"] == "active" and rows[n]["hooks"] == ["before_generation"]
               and [a["name"] for a in rows[n]["actions"]] == ["shout"] for n in names)
    out, started = dihya("plugins", "show", names[0], "--json")
    assert started == 0 and json.loads(out)["actions"][0]["name"] == "shout"


def _worker_processes(names: list[str]) -> list[int]:
    """Pids of live processes whose command line names one of these plugins (their workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(f'"name": "{n}"' in cmdline or f'"name":"{n}"' in cmdline
                                for n in names):
            found.append(int(entry.name))
    return found


def _wait_until(condition: Any, what: str, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"still {what} after {deadline_s} s"
        time.sleep(0.05)


@pytest.mark.parametrize("close_when", ["at once", "after the first start"])
def test_a_pool_closed_while_warming_raises_nothing_and_leaves_no_worker(
        plugin_site, spawned, close_when) -> None:
    """A server's reload closes an old pool while its workers warm in the background: no
    thread may die of it (the spawner was shut down under it), and every worker that still
    started is stopped."""
    config, names, store = _site(plugin_site, {f"w{i}": AFTER_ONLY for i in range(4)})
    _listing(config, plugin_site, store).close()  # records: the next listing starts none
    errors: list[Any] = []
    previous_hook = threading.excepthook
    threading.excepthook = errors.append
    try:
        spawned.clear()
        snap = _listing(config, plugin_site, store)
        assert snap.sandbox is not None and spawned == []
        snap.sandbox.warm()
        if close_when != "at once":
            _wait_until(lambda: spawned, "no worker started")
        snap.close()
        _wait_until(lambda: not any(t.name.startswith("dihya-sandbox-warm")
                                    for t in threading.enumerate()), "warming")
    finally:
        threading.excepthook = previous_hook
    assert [f"{e.thread.name}: {e.exc_type.__name__}: {e.exc_value}" for e in errors] == []
    assert snap.sandbox.running() == {}
    _wait_until(lambda: not _worker_processes(list(names.values())),
                "a worker process of a closed pool is running")
