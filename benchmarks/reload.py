"""Benchmark: reloading the plugin registry with N installed plugins, and how fast a switch
reaches every worker of a running server.

Sets up, in a temporary directory removed at the end:
  * N synthetic plugin wheels (tests/support/wheels.py, pass-through hooks), plus two more
    wheels of the first one, `bench0000`: an upgrade (2.0.0, other content) and a tampered
    copy of 1.0.0 (same version, one more line);
  * one fresh venv with the core (a wheel built from this checkout) and the N plugins;
  * configs approving all N in-process, with fingerprints computed by the core itself; the
    upgrade is approved too (a second allowlist entry, fingerprinted from its wheel with
    `dihya plugins fingerprint`), the tampered copy is not.

1. Reload in a running process. A long-lived process in the venv holds a
   `dihya.web.state.DihyaState` (what each server worker holds) and times `reload()` on
   command: the store's state version bumped, the registry rebuilt (discover, the gate
   hashing every file, load, validate), the snapshot swapped, the reload audited — what
   `POST /api/v1/plugins/reload` does in the worker that receives it. Rounds, interleaved:
     A. reload, nothing changed;
     B. restart (the baseline): a fresh process that imports the core and runs
        `create_app(config)` — what each worker of a restarted server does before it can
        answer (state, store, first build, one audit event per plugin seen), timed from
        outside, interpreter start included; and, for reference, stevedore's
        `ExtensionManager(group, invoke_on_load=True)` in a fresh process;
     then, outside any timing, `pip install --force-reinstall` of the next version of
     `bench0000` (2.0.0, the tampered 1.0.0, 1.0.0 again, in turn), and
     C. reload, one plugin changed: upgraded or downgraded and approved (it must be active
        again, running the new code), or tampered (it must be refused).
   The same rounds run in a second process whose config approves `bench0000` in sandbox
   mode (a changed plugin there means a new sandbox worker); `--no-sandbox` skips it.

2. Propagation across workers. Three (or four) real servers, `dihya serve --workers 2` on
   127.0.0.1, sharing the venv: one with the N plugins approved in-process, one the same
   but with the switched plugin in sandbox mode (switching it on starts a sandbox worker in
   each server worker; `--no-sandbox` skips this server), one with only `--small` of them
   approved (the floor: the same poll interval, a cheap rebuild); with `--postgres URL`,
   one more with the N plugins whose store is that PostgreSQL database (its workers are
   woken by LISTEN/NOTIFY instead of waiting for their next poll). After two unrecorded
   disable/enable pairs per server (first requests), for each trial, in turn on each
   server: POST /api/v1/plugins/<name>/disable (or enable), t0 when it answers, then
   `--pollers` client threads GET /api/v1/plugins/<name>, each request on a new
   connection (so they land on both workers), until at least `--window` seconds passed and
   the last `--stable` answers all show the new status. The trial's delay is the time from
   t0 to the arrival of the last answer that still showed the old status (0 if none); also
   reported from the moment the POST was sent (the POST itself rebuilds the registry of
   the worker that takes it before answering).

Targets (issue #6): reload <= 0.5 s with nothing changed and with one plugin changed; every
worker follows a switch within 1 s.

Target (issue #16): reload with nothing changed <= 0.2 s at N = 1000 (the verification cache
answers unchanged distributions by `stat`).

    python benchmarks/reload.py [--plugins 300] [--repeat 15] [--trials 10] [--small 3]
                                [--no-sandbox] [--no-changes] [--no-propagation]
                                [--postgres URL]
                                [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from _common import (
    PHASE_TIMER,
    build_core_wheel,
    clean_env,
    make_venv,
    print_machine,
    server_not_ready,
    stop_server,
    summary,
    table,
    tree_state,
    verdict_at_most,
)

from support.serving import call, free_port
from support.wheels import GROUP, build_plugin_wheel, plugin_source

RELOAD_TARGET_MS = 500.0
# issue #16: a reload with nothing changed, at N = 1000, answered from the verification cache
NOTHING_CHANGED_TARGET_MS = 200.0
PROPAGATION_TARGET_MS = 1000.0
CHANGED = "bench0000"  # the plugin that is upgraded, downgraded and tampered with
TOGGLED = "bench0001"  # the plugin the propagation trials switch off and on

CONFIG = """\
# benchmark config written by benchmarks/reload.py
[plugins]
hook_timeout_s = 5.0

[web]
rate_limit = "1000000/minute"
"""

# Approves plugins with the core's own functions: discover, inspect_files (the gate's
# fingerprint of the installed files), upsert_allow/write_document (the CLI's writer). The
# upgrade of CHANGED gets a second entry (the allowlist may hold several per name; the gate
# takes the one of the installed version), fingerprinted from its wheel.
# argv: a JSON object {config, names (null: all bench*), changed, changed_mode, upgrade}.
APPROVE = """\
import json, sys
from pathlib import Path
from dihya.config import AllowEntry, load_config
try:
    from dihya.config.edit import read_document, upsert_allow, write_document
except ImportError:  # a core from before dihya.config.edit
    from dihya.config import read_document, upsert_allow, write_document
from dihya.gate.discovery import discover
from dihya.gate.decide import inspect_files

spec = json.loads(sys.argv[1])
path = Path(spec["config"])
names = set(spec["names"]) if spec["names"] is not None else None
doc = read_document(path)
count = 0
for plugin in discover():
    if not plugin.name.startswith("bench") or (names is not None and plugin.name not in names):
        continue
    files, problem = inspect_files(plugin)
    assert files is not None and problem is None, problem
    mode = spec["changed_mode"] if plugin.name == spec["changed"] else "in-process"
    upsert_allow(doc, AllowEntry(name=plugin.name, distribution=plugin.distribution,
                                 version=plugin.version, fingerprint=files.fingerprint,
                                 mode=mode))
    count += 1
write_document(path, doc)
up = spec.get("upgrade")
if up:
    with path.open("a") as fh:
        fh.write(f'''
[[plugins.allow]]
name = "{spec['changed']}"
distribution = "{up['distribution']}"
version = "{up['version']}"
fingerprint = "{up['fingerprint']}"
mode = "{spec['changed_mode']}"
''')
load_config(path)  # still valid
print(count)
"""

# The long-lived process of part 1: a DihyaState, reloaded on each "reload" line of stdin;
# answers one JSON line (prefixed "@@") per command. The registry's steps are wrapped with
# timers where this version of the core has them (module globals of dihya.registry, the
# store's and the auditor's methods on the instances); a step it lacks is not reported.
# argv: config, name of the changed plugin.
HELPER = """\
import json, sys, time
t_start = time.perf_counter()
from pathlib import Path
import dihya.registry as registry
from dihya.web.state import DihyaState
t_imports = time.perf_counter()

""" + PHASE_TIMER + """
for attr, key in (("discover", "discover"), ("assess_all", "gate"),
                  ("_forget_stale_modules", "forget"), ("load_plugins", "load"),
                  ("_start_workers", "sandbox")):
    if callable(getattr(registry, attr, None)):
        setattr(registry, attr, timed(key, getattr(registry, attr)))

config_path, target = Path(sys.argv[1]), sys.argv[2]
state = DihyaState(config_path)
t_state = time.perf_counter()
for attr in ("bump_state_version", "state_version", "plugin_switches"):
    if callable(getattr(state.store, attr, None)):
        setattr(state.store, attr, timed("store", getattr(state.store, attr)))
state.auditor.record = timed("audit", state.auditor.record)


def describe(snapshot):
    rec = snapshot.get(target)
    if rec is None:
        return {"status": "missing"}
    info = {"status": rec.status, "reason": rec.reason, "version": rec.version,
            "mode": rec.mode}
    if rec.instance is not None:  # in-process: the version the running class declares
        info["running"] = getattr(type(rec.instance), "version", None)
    return info


def emit(kind, **data):
    print("@@" + json.dumps({"kind": kind, **data}), flush=True)


snapshot = state.refresh()
emit("ready", imports=t_imports - t_start, init=t_state - t_imports,
     active=len(snapshot.active), target=describe(snapshot))
for line in sys.stdin:
    if line.strip() != "reload":
        break
    phases.clear()
    start = time.perf_counter()
    snapshot = state.reload()
    elapsed = time.perf_counter() - start
    emit("reload", s=elapsed, build_ms=snapshot.build_ms, phases=dict(phases),
         active=len(snapshot.active), target=describe(snapshot))
state.close()
emit("bye")
"""

# Baseline B: what each worker of a restarted server does before it answers.
# The audit events it records are counted and timed (Auditor.record wrapped).
RESTART = """\
import json, sys, time
t0 = time.perf_counter()
from dihya.web import create_app
t1 = time.perf_counter()
from dihya.audit import Auditor
audit = {"events": 0, "s": 0.0}
plain_record = Auditor.record

def record(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return plain_record(self, *args, **kwargs)
    finally:
        audit["events"] += 1
        audit["s"] += time.perf_counter() - start

Auditor.record = record
t1b = time.perf_counter()
app = create_app(sys.argv[1])
t2 = time.perf_counter()
state = app.extensions["dihya"]
snapshot = state.snapshot()
state.close()
print(json.dumps({"imports": t1 - t0, "create_app": t2 - t1b, "build_ms": snapshot.build_ms,
                  "active": len(snapshot.active), "audit_events": audit["events"],
                  "audit_s": audit["s"]}))
"""

STEVEDORE = f"""\
import json
from stevedore import ExtensionManager

manager = ExtensionManager({GROUP!r}, invoke_on_load=True)
print(json.dumps(len(manager.names())))
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def dihya(bindir: Path, config: Path, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run([str(bindir / "dihya"), "--config", str(config), *args], env=env,
                         cwd=config.parent, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"dihya {' '.join(args)}: exit {out.returncode}\n{out.stdout}"
                         f"{out.stderr}")
    return out.stdout


class Setup:
    """The wheels, the venv and the configs of one run."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp = tmp
        self.env = clean_env(XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp))
        wheels = tmp / "wheels"
        t0 = time.perf_counter()
        tree = tree_state()  # what the wheel is built from, read just before building it
        core = build_core_wheel(wheels)
        plugins = [build_plugin_wheel(wheels, f"bench{i:04d}") for i in range(args.plugins)]
        # the variants of CHANGED, each in its own directory (two share name and version)
        self.variants = {
            "1.0.0": plugins[0],
            "2.0.0": build_plugin_wheel(tmp / "upgrade", CHANGED, version="2.0.0"),
            "1.0.0 tampered": build_plugin_wheel(
                tmp / "tampered", CHANGED,
                source=plugin_source(CHANGED) + "\n# one changed line\n"),
        }
        t1 = time.perf_counter()
        self.python = make_venv(tmp / "venv", [str(core)], ["--no-deps", *map(str, plugins)])
        self.bindir = self.python.parent
        t2 = time.perf_counter()
        work = tmp / "work"
        self.configs = {
            "in-process": self.config(work / "in-process", None, "in-process", True),
            "restart": self.config(work / "restart", None, "in-process", True),
            "serve": self.config(work / "serve", None, "in-process", True),
        }
        if args.sandbox:
            self.configs["sandbox"] = self.config(work / "sandbox", None, "sandbox", True)
            self.configs["serve-sandbox"] = self.config(work / "serve-sandbox", None,
                                                        "sandbox", False, changed=TOGGLED)
        self.pg_schema: str | None = None
        schema = f"dihya_bench_{os.getpid()}_{int(time.time())}"
        if args.postgres:  # a fresh schema of that database, created last, dropped at the end
            sep = "&" if "?" in args.postgres else "?"
            url = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
            self.configs["serve-postgres"] = self.config(work / "serve-postgres", None,
                                                         "in-process", False, store_url=url)
        if args.small:
            names = [f"bench{i:04d}" for i in range(1, args.small + 1)]
            self.configs["serve-small"] = self.config(work / "serve-small", names,
                                                      "in-process", False)
        t3 = time.perf_counter()
        print(f"setup: {args.plugins} wheels {t1 - t0:.1f} s, venv + pip install "
              f"{t2 - t1:.1f} s, approve ({len(self.configs)} configs) {t3 - t2:.1f} s")
        versions = subprocess.run(
            [str(self.python), "-c", "from importlib import metadata as m; print(', '.join("
             "f'{d} {m.version(d)}' for d in ('dihya-core', 'stevedore', 'flask', "
             "'gunicorn', 'sqlalchemy')))"],
            check=True, capture_output=True, text=True).stdout.strip()
        print(f"  installed: {versions}")
        print(f"  core built from: {tree}")
        if args.postgres:
            self.pg_url, self.pg_schema = args.postgres, schema
            self.postgres("CREATE")

    def config(self, where: Path, names: list[str] | None, changed_mode: str,
               upgrade: bool, changed: str = CHANGED, store_url: str | None = None) -> Path:
        """A config approving `names` (None: all N) in-process, except `changed` in
        `changed_mode`; with `upgrade`, CHANGED's 2.0.0 approved too; its store is a
        SQLite file beside it unless `store_url`."""
        where.mkdir(parents=True)
        path = where / "dihya.toml"
        path.write_text(CONFIG + (f'\n[store]\nurl = "{store_url}"\n' if store_url else ""))
        spec: dict[str, Any] = {"config": str(path), "names": names, "changed": changed,
                                "changed_mode": changed_mode, "upgrade": None}
        if upgrade:
            wheel = self.variants["2.0.0"]
            fingerprint = dihya(self.bindir, path, "plugins", "fingerprint", str(wheel),
                                env=self.env).strip().splitlines()[-1]
            spec["upgrade"] = {"distribution": f"dihya-plugin-{CHANGED}", "version": "2.0.0",
                               "fingerprint": fingerprint}
        out = subprocess.run([str(self.python), "-c", APPROVE, json.dumps(spec)],
                             env=self.env, cwd=where, check=True, capture_output=True,
                             text=True).stdout.strip()
        expected = len(names) if names is not None else len(list(
            (self.tmp / "wheels").glob("dihya_plugin_bench*.whl")))
        if int(out) != expected:
            raise SystemExit(f"{path}: approved {out} plugins, expected {expected}")
        return path

    def postgres(self, verb: str) -> None:
        """CREATE or DROP this run's schema, with the venv's SQLAlchemy and psycopg."""
        code = ("import sys, sqlalchemy as sa\n"
                "engine = sa.create_engine(sys.argv[1], isolation_level='AUTOCOMMIT')\n"
                "with engine.connect() as conn:\n"
                "    conn.execute(sa.text(sys.argv[2]))\n")
        sql = (f'CREATE SCHEMA "{self.pg_schema}"' if verb == "CREATE"
               else f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
        subprocess.run([str(self.python), "-c", code, self.pg_url, sql], env=self.env,
                       check=True)

    def cleanup(self) -> None:
        if self.pg_schema is not None:
            self.postgres("DROP")

    def install(self, variant: str) -> None:
        out = subprocess.run([str(self.python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "--no-deps", "--force-reinstall",
                              str(self.variants[variant])],
                             env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"pip install {variant}: exit {out.returncode}\n{out.stderr}")


class Helper:
    """The long-lived process holding a DihyaState (part 1)."""

    def __init__(self, label: str, setup: Setup, config: Path, script: Path) -> None:
        self.label = label
        self.log_path = config.parent / "helper.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(setup.python), str(script), str(config), CHANGED], env=setup.env,
            cwd=config.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True)
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                answer: dict[str, Any] = json.loads(line[2:])
                return answer
        self.log.flush()
        raise SystemExit(f"the {self.label} helper ended:\n"
                         + self.log_path.read_text()[-3000:])

    def reload(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("reload\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Server:
    """One `dihya serve --workers W` on a free port of 127.0.0.1, in its own process group
    (the arbiter and its workers), logging to a file."""

    def __init__(self, label: str, setup: Setup, config: Path, workers: int) -> None:
        self.label = label
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = config.parent / "server.log"
        self.log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(setup.bindir / "dihya"), "--config", str(config), "serve", "--host",
             "127.0.0.1", "--port", str(self.port), "--workers", str(workers)],
            cwd=config.parent, env=setup.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                status, _, body = call(self.base, "GET", "/readyz", timeout=5)
                if status == 200:
                    ready: dict[str, Any] = body
                    return ready
            time.sleep(0.2)
        self.stop()
        raise server_not_ready(self.label, self.log_path)

    def stop(self) -> None:
        stop_server(self.proc, self.log)


def timed_run(cmd: list[str], setup: Setup, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=setup.env, cwd=cwd, check=True, capture_output=True,
                         text=True)
    return time.perf_counter() - start, out.stdout


# -- part 1 ----------------------------------------------------------------------------------

# the order in which CHANGED's versions are installed (one per round), from 1.0.0
CYCLE = ("2.0.0", "1.0.0 tampered", "1.0.0")


def expected_after(variant: str) -> tuple[str, str]:
    """(kind of reload, status CHANGED must have after it)."""
    if variant == "1.0.0 tampered":
        return "changed, refused", "refused"
    return "changed, approved", "active"


def reloads(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    work = setup.tmp / "work"
    script = work / "helper.py"
    script.write_text(HELPER)
    (work / "restart.py").write_text(RESTART)
    (work / "stevedore_baseline.py").write_text(STEVEDORE)
    restart_cmd = [str(setup.python), str(work / "restart.py"), str(setup.configs["restart"])]
    stevedore_cmd = [str(setup.python), str(work / "stevedore_baseline.py")]
    helpers: list[Helper] = []
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    restarts: list[tuple[float, dict[str, Any]]] = []
    stevedore: list[float] = []
    problems: list[str] = []
    try:
        for label in ("in-process", "sandbox"):
            if label in setup.configs:
                helpers.append(Helper(label, setup, setup.configs[label], script))
        for h in helpers:
            print(f"  {h.label} process ready: {h.ready['active']} active, {CHANGED} "
                  f"{h.ready['target']}")
            h.reload()  # warm-up
        timed_run(restart_cmd, setup, work)  # warm-up: bytecode, stevedore's cache
        timed_run(stevedore_cmd, setup, work)
        installed = "1.0.0"
        for r in range(args.repeat):
            order = helpers if r % 2 == 0 else helpers[::-1]
            for h in order:
                samples.setdefault((h.label, "nothing changed"), []).append(h.reload())
            wall, out = timed_run(restart_cmd, setup, work)
            restarts.append((wall, json.loads(out)))
            stevedore.append(timed_run(stevedore_cmd, setup, work)[0])
            if not args.changes:
                print(f"  round {r + 1}/{args.repeat}: nothing installed", flush=True)
                continue
            installed = CYCLE[r % len(CYCLE)]
            setup.install(installed)
            kind, status = expected_after(installed)
            for h in order:
                answer = h.reload()
                answer["installed"] = installed
                samples.setdefault((h.label, kind), []).append(answer)
                got = answer["target"]
                if got["status"] != status:
                    problems.append(f"{h.label}, {installed}: {CHANGED} is {got['status']} "
                                    f"({got.get('reason')}), expected {status}")
            print(f"  round {r + 1}/{args.repeat}: installed {CHANGED} {installed}", flush=True)
        if installed != "1.0.0":  # part 2 starts from the approved 1.0.0
            setup.install("1.0.0")
    finally:
        for h in helpers:
            h.close()
    return {"samples": samples, "restarts": restarts, "stevedore": stevedore,
            "problems": problems}


def report_reloads(args: argparse.Namespace, result: dict[str, Any]) -> None:
    samples = result["samples"]
    restart_s = [wall for wall, _ in result["restarts"]]
    restart = summary(restart_s)
    print(f"\n== 1. reload in a running process (DihyaState.reload()), {args.plugins} "
          f"approved plugins, {args.repeat} interleaved rounds (ms)")
    rows = []
    order = sorted(samples, key=lambda k: (k[0] != "in-process", k[1] != "nothing changed",
                                           k[1]))
    for label, kind in order:
        values = [a["s"] for a in samples[(label, kind)]]
        s = summary(values)
        name = f"{'A' if kind == 'nothing changed' else 'C'}  reload, {kind}"
        if label != "in-process":
            name += f" ({CHANGED} in {label} mode)"
        rows.append([name, ms(s["median"]), ms(s["p90"]), ms(max(values)), ms(s["min"]),
                     str(len(values)), f"{s['median'] / restart['median']:.3f}x"])
    rows.append(["B  restart: fresh process, create_app()", ms(restart["median"]),
                 ms(restart["p90"]), ms(max(restart_s)), ms(restart["min"]),
                 str(len(restart_s)), "1x"])
    sted = summary(result["stevedore"])
    rows.append(["   stevedore ExtensionManager, fresh process", ms(sted["median"]),
                 ms(sted["p90"]), ms(max(result["stevedore"])), ms(sted["min"]),
                 str(len(result["stevedore"])), f"{sted['median'] / restart['median']:.3f}x"])
    print(table(["side", "median", "p90", "max", "min", "n", "vs restart"], rows))
    for label, kind in order:
        values = [a["s"] * 1000 for a in samples[(label, kind)]]
        s = summary(values)
        under = sum(v <= RELOAD_TARGET_MS for v in values)
        print(f"{label + ', ' + kind:34} median: "
              f"{verdict_at_most(s['median'], RELOAD_TARGET_MS)}; "
              f"{under}/{len(values)} runs under {RELOAD_TARGET_MS:g} ms")
    for label in sorted({label for label, _ in samples}):
        values = [a["s"] * 1000 for a in samples.get((label, "nothing changed"), [])]
        if values:
            s = summary(values)
            print(f"{label}, reload with nothing changed, N = {args.plugins} (issue #16 "
                  f"target): {verdict_at_most(s['median'], NOTHING_CHANGED_TARGET_MS)}")
    for label in sorted({label for label, _ in samples}):
        changed = samples.get((label, "changed, approved"), [])
        running = [a for a in changed if "running" in a["target"]]
        if running:
            current = sum(a["target"]["running"] == a["target"]["version"] for a in running)
            print(f"{label}: after an approved change, the running class declares the "
                  f"installed version in {current}/{len(running)} reloads")
    for problem in result["problems"]:
        print(f"  PROBLEM: {problem}")

    print("\n== where a reload's time goes (ms, median over the reloads of each kind: "
          "nothing changed, changed and approved, changed and refused; 'other' = total - "
          "the steps)")
    keys = [("store", "store (state version: bump + read, switches)"),
            ("discover", "discover (importlib.metadata)"),
            ("gate", "gate (hash every file, resolve, deps)"),
            ("forget", "forget the changed plugin's modules"),
            ("load", "load (import + validate the in-process ones)"),
            ("sandbox", "sandbox workers (keep or start)"),
            ("audit", "audit events"),
            ("other", "other (records, snapshot, lock, config stat)")]
    columns = order

    def phase(answers: list[dict[str, Any]], key: str) -> str:
        if key == "other":
            values = [a["s"] - sum(a["phases"].values()) for a in answers]
        else:
            values = [a["phases"][key] for a in answers if key in a["phases"]]
        return ms(summary(values)["median"]) if values else "-"

    rows = [[title, *(phase(samples[c], key) for c in columns)] for key, title in keys]
    rows.append(["total", *(ms(summary([a["s"] for a in samples[c]])["median"])
                            for c in columns)])
    rows.append(["  of which snapshot.build_ms (build_registry)",
                 *(f"{summary([a['build_ms'] for a in samples[c]])['median']:.1f}"
                   for c in columns)])
    short = {"nothing changed": "nothing", "changed, approved": "approved",
             "changed, refused": "refused"}
    headers = ["step", *(f"{label}: {short.get(kind, kind)}" if label != "in-process"
                         else short.get(kind, kind) for label, kind in columns)]
    print(table(headers, rows))

    inner = [p for _, p in result["restarts"]]
    events = round(summary([p["audit_events"] for p in inner])["median"])
    print(f"\n== restart, inside the fresh process (ms, median of {len(inner)})")
    rows = [
        ["imports (dihya.web: flask, sqlalchemy, the core)",
         ms(summary([p["imports"] for p in inner])["median"])],
        ["create_app (config, store, first build, audit)",
         ms(summary([p["create_app"] for p in inner])["median"])],
        ["  of which snapshot.build_ms",
         f"{summary([p['build_ms'] for p in inner])['median']:.1f}"],
        [f"  of which audit events ({events})",
         ms(summary([p["audit_s"] for p in inner])["median"])],
        ["wall clock (+ interpreter start and exit)", ms(restart["median"])],
    ]
    print(table(["step", "ms"], rows))


# -- part 2 ----------------------------------------------------------------------------------


def trial(server: Server, token: str, action: str, args: argparse.Namespace,
          window: float | None = None) -> dict[str, Any]:
    expected = "disabled" if action == "disable" else "active"
    path = f"/api/v1/plugins/{TOGGLED}"
    body = {"reason": "benchmarks/reload.py"} if action == "disable" else None
    sent = time.perf_counter()
    status, _, row = call(server.base, "POST", f"{path}/{action}", token, body)
    t0 = time.perf_counter()
    if status != 200 or row.get("status") != expected:
        raise SystemExit(f"{server.label}: POST {path}/{action}: {status} {row}")
    answers: list[tuple[float, bool]] = []  # (arrival, shows the new status)
    lock = threading.Lock()
    done = threading.Event()
    errors: list[str] = []

    def poll() -> None:
        while not done.is_set():
            try:
                code, _, data = call(server.base, "GET", path, token, timeout=10)
            except OSError as exc:
                code, data = 0, str(exc)
            got = time.perf_counter()
            with lock:
                if code != 200:
                    errors.append(f"{code} {str(data)[:200]}")
                    done.set()
                    return
                answers.append((got, data["status"] == expected))
                tail = answers[-args.stable:]
                settled = (len(tail) == args.stable and all(fresh for _, fresh in tail)
                           and got - t0 >= (args.window if window is None else window))
                if settled or got - t0 > args.timeout:
                    done.set()
            time.sleep(args.gap)

    threads = [threading.Thread(target=poll) for _ in range(args.pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{server.label}: GET {path}: {errors[0]}")
    stale = [got for got, fresh in answers if not fresh]
    tail = answers[-args.stable:]
    return {"action": action, "delay": (max(stale) - t0) if stale else 0.0,
            "from_send": (max(stale) - sent) if stale else t0 - sent,
            "post": t0 - sent, "polls": len(answers), "stale": len(stale),
            "settled": len(tail) == args.stable and all(fresh for _, fresh in tail)}


def propagation(setup: Setup, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    labels = {"serve": f"{args.plugins} approved"}
    if "serve-postgres" in setup.configs:
        labels["serve-postgres"] = f"{args.plugins} approved, PostgreSQL store"
    if "serve-sandbox" in setup.configs:
        labels["serve-sandbox"] = f"{args.plugins} approved, {TOGGLED} in sandbox mode"
    if "serve-small" in setup.configs:
        labels["serve-small"] = f"{args.small} approved of {args.plugins} installed"
    servers: dict[str, Server] = {}
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in labels}
    try:
        for key, label in labels.items():  # all started at once, then waited for
            servers[key] = Server(label, setup, setup.configs[key], args.workers)
        tokens = {}
        for key, server in servers.items():
            ready = server.wait_ready()
            tokens[key] = dihya(setup.bindir, setup.configs[key], "tokens", "create", "--role",
                                "admin", "--name", "bench",
                                env=setup.env).strip().splitlines()[-1]
            print(f"  server {server.label} on port {server.port}: ready, "
                  f"{ready.get('plugins_active')} active")
        for key, server in servers.items():  # warm-up (first requests: imports, caches)
            for action in ("disable", "enable", "disable", "enable"):
                trial(server, tokens[key], action, args, window=0.3)
        rng = random.Random(6)
        for k in range(args.trials):
            action = "disable" if k % 2 == 0 else "enable"
            for key in (list(servers) if k % 2 == 0 else list(servers)[::-1]):
                # a random phase against the workers' poll interval
                time.sleep(rng.uniform(0.1, 0.6))
                results[key].append(trial(servers[key], tokens[key], action, args))
        print(f"  {args.trials} trials per server done", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    for server in servers.values():
        log = server.log_path.read_text()
        if "Traceback" in log:
            print(f"  note: the log of server {server.label} holds a traceback:\n"
                  + log[log.index("Traceback"):][:2000])
    return {labels[key]: value for key, value in results.items()}


def report_propagation(args: argparse.Namespace,
                       results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n== 2. propagation of a switch across {args.workers} workers: delay from the "
          f"POST's answer to the last answer showing the old status (ms; {args.trials} "
          f"trials per server, interleaved; {args.pollers} pollers, a new connection per "
          f"request, {args.gap * 1000:g} ms between a poller's requests)")
    def median_of(trials: list[dict[str, Any]], key: str, action: str | None = None) -> str:
        values = [t[key] for t in trials if action is None or t["action"] == action]
        return ms(summary(values)["median"]) if values else "-"

    rows = []
    for label, trials in results.items():
        delays = [t["delay"] for t in trials]
        s = summary(delays)
        rows.append([label, ms(s["median"]), ms(s["p90"]), ms(max(delays)),
                     median_of(trials, "delay", "disable"), median_of(trials, "delay", "enable"),
                     f"{sum(t['stale'] > 0 for t in trials)}/{len(trials)}",
                     str(sum(t["polls"] for t in trials)),
                     f"{max(delays) * 1000 / PROPAGATION_TARGET_MS:.2f}"])
    print(table(["server", "median", "p90", "max", "disable: median", "enable: median",
                 "trials with stale answers", "polls", "max / 1 s target"], rows))
    for label, trials in results.items():
        delays = " ".join(f"{t['action'][0]}{round(t['delay'] * 1000)}" for t in trials)
        unsettled = sum(not t["settled"] for t in trials)
        note = f"; {unsettled} trials did not settle within {args.timeout:g} s" if unsettled else ""
        print(f"{label}: delays (d: disable, e: enable) {delays} ms{note}")
        posts = " ".join(f"{t['action'][0]}{round(t['post'] * 1000)}" for t in trials)
        print(f"{label}: the POSTs themselves {posts} ms")
        worst = max(t["delay"] for t in trials) * 1000
        print(f"{label}: every worker within 1 s of the POST's answer, max over trials: "
              f"{verdict_at_most(worst, PROPAGATION_TARGET_MS)}")

    print("\n== the same trials from the moment the POST was sent: the POST itself (the "
          "worker that takes it rebuilds before answering), then until no worker shows the "
          "old status (ms)")
    rows = []
    for label, trials in results.items():
        total = [t["from_send"] for t in trials]
        rows.append([label, ms(summary(total)["median"]), ms(max(total)),
                     median_of(trials, "post", "disable"), median_of(trials, "post", "enable"),
                     median_of(trials, "from_send", "disable"),
                     median_of(trials, "from_send", "enable")])
    print(table(["server", "all settled: median", "max", "POST disable: median",
                 "POST enable: median", "all settled, disable: median",
                 "all settled, enable: median"], rows))
    for label, trials in results.items():
        worst = max(t["from_send"] for t in trials) * 1000
        print(f"{label}: every worker within 1 s of sending the POST, max over trials: "
              f"{verdict_at_most(worst, PROPAGATION_TARGET_MS)}")
    print("(expected bound: the workers' poll interval, 250 ms, + one rebuild of the "
          "registry + one request; on PostgreSQL a notification replaces the poll wait)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=15,
                        help="rounds of part 1 (each: reload, restart, install, reload)")
    parser.add_argument("--trials", type=int, default=10, help="switches per server, part 2")
    parser.add_argument("--small", type=int, default=3,
                        help="plugins approved on the floor server of part 2 (0: no such "
                        "server)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pollers", type=int, default=2, help="client threads polling")
    parser.add_argument("--stable", type=int, default=20,
                        help="consecutive answers with the new status that end a trial")
    parser.add_argument("--window", type=float, default=1.5,
                        help="seconds a trial polls at least")
    parser.add_argument("--gap", type=float, default=0.005,
                        help="seconds between two requests of one poller")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds after which a trial stops polling")
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                        help="skip the sides with the changed (part 1) or switched (part 2) "
                        "plugin in sandbox mode")
    parser.add_argument("--no-changes", dest="changes", action="store_false",
                        help="part 1 without the changed-plugin rounds: only reloads with "
                        "nothing changed (none a moment after an install), restarts and "
                        "stevedore")
    parser.add_argument("--no-propagation", dest="propagation", action="store_false",
                        help="part 1 only (reloads in a running process), no servers")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="also a server of part 2 whose store is this PostgreSQL database "
                        "(a fresh schema, dropped at the end), where LISTEN/NOTIFY wakes the "
                        "workers: e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to create the temporary venv (default: under ~/.cache; "
                        "not /tmp, where stevedore disables its cache)")
    args = parser.parse_args()
    if args.plugins < 2 or args.small >= args.plugins:
        parser.error("--plugins must be at least 2, and --small below it")

    print_machine()
    base = args.workdir or Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-reload-", dir=base))
    setup: Setup | None = None
    try:
        setup = Setup(tmp, args)
        part1 = reloads(setup, args)
        part2 = propagation(setup, args) if args.propagation else None
        report_reloads(args, part1)
        if part2 is not None:
            report_propagation(args, part2)
    finally:
        if setup is not None:
            setup.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
