"""Benchmark: listing sandbox-mode plugins, and a server worker's start, each against a baseline.

Sets up, in a temporary directory removed at the end:
  * `--installed` synthetic plugin wheels (tests/support/wheels.py, pass-through hooks) in
    one fresh venv with the core (a wheel built from this checkout);
  * three configs, each in its own directory with its own store: the first `--approved`
    plugins approved in sandbox mode (S), the same approved in-process (P), and the same
    in-process for the server start (W); fingerprints computed by the core itself.

1. `dihya plugins list --json`, S against P, interleaved, as fresh processes. The listing
   in S must start no sandbox worker: what each worker said when the plugin was checked is
   recorded in the store by fingerprint (`dihya.store.facts`). The plugins here are approved
   by writing the config directly, as a config approved before those records existed, so
   the first S listing starts each worker once and records it (reported on its own line);
   every later one reads the records. Each run counts the sandbox workers it started (an
   audit hook on `subprocess.Popen` in the measured process, on both sides alike).
   Target (issue #16): S <= 1.5x P.

2. A server worker's start with `--installed` installed and `--approved` approved
   (in-process), against a bare Flask app: a fresh process times, from before its first
   import, `from dihya.web import create_app; create_app(W, create_store=False)` (what each
   `dihya serve` worker does before it answers: state, store, first build, audit of what
   changed), with the share of the build (`build_registry`) and of the audit (the changes
   compared with the store, the events written), and the audit events it wrote; the
   baseline times `from flask import Flask; Flask(...)` with one route. The first start on
   a fresh store (every plugin seen for the first time) is reported on its own line, and
   the same start with S (the sandbox-mode plugins listed from their records: the start
   waits for no worker; they start in the background, stopped here when the app closes).
   A last side is what a `dihya serve` worker does now: the parent imports the core
   (`dihya.web.serve.import_core`, as the arbiter does before it forks), the child is
   timed from the fork to its app (`create_app`), build included.
   Target (issue #16): <= 0.3 s, with no audit event when nothing changed.

`--compare-core DIR` (another checkout's `core` directory, e.g. `main`'s): each measured
process of 1 (S and P) and 2 (the start as it is, the forked worker) is also run with
`PYTHONPATH=DIR` (that core's sources in place of the installed one, same venv, plugins and
configs), interleaved, and a last table puts the two cores side by side.

    python benchmarks/listing_start.py [--installed 1000] [--approved 100] [--repeat 5]
                                       [--workdir DIR] [--compare-core DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PHASE_TIMER,
    build_core_wheel,
    clean_env,
    make_venv,
    print_machine,
    summary,
    table,
    tree_state,
    verdict,
    verdict_at_most,
)

from support.wheels import build_plugin_wheel

LIST_TARGET = 1.5
START_TARGET_MS = 300.0

# Writes the configs with the core's own functions (discover, the gate's fingerprint, the
# CLI's writer), as a config written before the facts were recorded.
APPROVE = """\
import sys
from pathlib import Path
from dihya.config import AllowEntry
from dihya.config.edit import read_document, upsert_allow, write_document
from dihya.gate.decide import inspect_files
from dihya.gate.discovery import discover

approved = int(sys.argv[1])
targets = [(Path(p), m) for p, m in zip(sys.argv[2::2], sys.argv[3::2])]
plugins = sorted((p for p in discover() if p.name.startswith("bench")), key=lambda p: p.name)
docs = [(path, mode, read_document(path)) for path, mode in targets]
for plugin in plugins[:approved]:
    files, problem = inspect_files(plugin)
    assert files is not None and problem is None, problem
    for _path, mode, doc in docs:
        upsert_allow(doc, AllowEntry(name=plugin.name, distribution=plugin.distribution,
                                     version=plugin.version, fingerprint=files.fingerprint,
                                     mode=mode))
for path, _mode, doc in docs:
    write_document(path, doc)
print(len(plugins))
"""

# `dihya ...` in a process that counts the sandbox workers it starts (their command line
# ends with the worker's JSON spec) and prints the count on stderr at exit.
COUNTING_CLI = """\
import atexit, sys
started = []
def hook(event, args):
    if event == "subprocess.Popen":
        started.extend(a for a in (args[1] or ()) if isinstance(a, str)
                       and a.startswith("{") and '"fingerprint"' in a)
sys.addaudithook(hook)
atexit.register(lambda: sys.stderr.write(f"WORKERS={len(started)}\\n"))
from dihya.cli import main
sys.argv[0] = "dihya"
main()
"""

SERVER_START = "import time\nt0 = time.perf_counter()\n" + PHASE_TIMER + """\
import json, sys
import dihya.web.state as state
state.build_registry = timed("build", state.build_registry)
state.DihyaState._audit_changes = timed("audit", state.DihyaState._audit_changes)
from dihya.web import create_app
app = create_app(sys.argv[1], create_store=sys.argv[2] == "create")
total = time.perf_counter() - t0
app.extensions["dihya"].close()
print(json.dumps({"total": total, **phases}))
"""

# What a `dihya serve` worker does since the arbiter imports the core before forking
# (`dihya.web.serve.import_core`): the parent imports, the child is timed from the fork.
SERVER_START_FORKED = "import time\n" + PHASE_TIMER + """\
import json, os, sys
from dihya.web.serve import import_core
import_core()
import dihya.web.state as state
state.build_registry = timed("build", state.build_registry)
state.DihyaState._audit_changes = timed("audit", state.DihyaState._audit_changes)
read, write = os.pipe()
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(read)
    from dihya.web import create_app
    app = create_app(sys.argv[1], create_store=False)
    total = time.perf_counter() - t0
    app.extensions["dihya"].close()
    os.write(write, json.dumps({"total": total, **phases}).encode())
    os._exit(0)
os.close(write)
data = b""
while chunk := os.read(read, 65536):
    data += chunk
os.waitpid(pid, 0)
print(data.decode())
"""

FLASK_START = """\
import time
t0 = time.perf_counter()
import json
from flask import Flask
app = Flask("baseline")
@app.get("/")
def index():
    return {"ok": True}
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def setup(tmp: Path, installed: int, approved: int) -> tuple[Path, dict[str, Path]]:
    """The venv (its python) and the three configs (S, P, W), each with a store."""
    wheels = tmp / "wheels"
    wheels.mkdir()
    t0 = time.perf_counter()
    core = build_core_wheel(wheels)
    plugins = [build_plugin_wheel(wheels, f"bench{i:04d}") for i in range(installed)]
    t1 = time.perf_counter()
    python = make_venv(tmp / "venv", [str(core)], ["--no-deps", *map(str, plugins)])
    t2 = time.perf_counter()
    configs = {}
    for key in ("S", "P", "W"):
        (tmp / key).mkdir()
        configs[key] = tmp / key / "dihya.toml"
        configs[key].write_text("# benchmark config\n[plugins]\nhook_timeout_s = 5.0\n"
                                "[sandbox]\nstart_timeout_s = 60\n")
    out = subprocess.run([str(python), "-c", APPROVE, str(approved),
                          str(configs["S"]), "sandbox", str(configs["P"]), "in-process",
                          str(configs["W"]), "in-process"],
                         check=True, capture_output=True, text=True).stdout.strip()
    if int(out) != installed:
        raise SystemExit(f"found {out} plugins installed, expected {installed}")
    for key in ("S", "P"):  # the CLI's store: `plugins reload` creates it beside the config
        subprocess.run([str(python.parent / "dihya"), "--config", str(configs[key]), "plugins",
                        "reload"], check=True, capture_output=True, env=clean_env())
    print(f"setup: {installed} wheels {t1 - t0:.1f} s, venv + pip install {t2 - t1:.1f} s, "
          f"approve {time.perf_counter() - t2:.1f} s")
    return python, configs


def reuse(tmp: Path) -> tuple[Path, dict[str, Path]]:
    """A previous `--workdir` setup with the core rebuilt from this checkout and every store
    removed (so the first listing and the first start are first again)."""
    python = tmp / "venv" / "bin" / "python"
    wheels = tmp / "core-wheel"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--force-reinstall", "--disable-pip-version-check",
                    str(build_core_wheel(wheels))], check=True)
    configs = {key: tmp / key / "dihya.toml" for key in ("S", "P", "W")}
    for config in configs.values():
        for path in config.parent.iterdir():
            if path.name != config.name:
                path.unlink()
    for key in ("S", "P"):
        subprocess.run([str(python.parent / "dihya"), "--config", str(configs[key]), "plugins",
                        "reload"], check=True, capture_output=True, env=clean_env())
    print(f"reused the setup in {tmp} (core rebuilt, stores removed)")
    return python, configs


def listing(python: Path, config: Path, env: dict[str, str] | None = None
            ) -> tuple[float, int, list[dict[str, Any]]]:
    """One `dihya --config C plugins list --json`: seconds, workers started, rows."""
    start = time.perf_counter()
    done = subprocess.run([str(python), "-c", COUNTING_CLI, "--config", str(config), "plugins",
                           "list", "--json"], capture_output=True, text=True,
                          env=env or clean_env(), cwd=config.parent)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"plugins list failed:\n{done.stderr[-3000:]}")
    counts = [line for line in done.stderr.splitlines() if line.startswith("WORKERS=")]
    return elapsed, int(counts[-1].removeprefix("WORKERS=")), json.loads(done.stdout)


def audit_events(config: Path) -> int:
    store = config.parent / "dihya.sqlite3"
    if not store.exists():
        return 0
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM dihya_audit").fetchone()[0])


def server_start(python: Path, config: Path, create: bool = False,
                 forked: bool = False, env: dict[str, str] | None = None) -> dict[str, float]:
    before = audit_events(config)
    out = subprocess.run([str(python), "-c", SERVER_START_FORKED if forked else SERVER_START,
                          str(config), "create" if create else "existing"],
                         capture_output=True, text=True, env=env or clean_env(),
                         cwd=config.parent)
    if out.returncode != 0:
        raise SystemExit(f"create_app failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["events"] = audit_events(config) - before
    return result


def flask_start(python: Path, cwd: Path) -> float:
    out = subprocess.run([str(python), "-c", FLASK_START], capture_output=True, text=True,
                         check=True, env=clean_env(), cwd=cwd)
    return float(json.loads(out.stdout)["total"])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def bench(tmp: Path, args: argparse.Namespace) -> None:
    if (tmp / "venv").is_dir() and (tmp / "W" / "dihya.toml").is_file():
        python, configs = reuse(tmp)
    else:
        python, configs = setup(tmp, args.installed, args.approved)
    print(f"core: {tree_state()}")
    print()
    # 1. listing
    first_t, first_workers, rows = listing(python, configs["S"])
    sandboxed = [r for r in rows if r["mode"] == "sandbox"]
    if len(sandboxed) != args.approved or any(r["status"] != "active" or not r["hooks"]
                                               for r in sandboxed):
        raise SystemExit("the sandbox-mode plugins are not all active with their hooks")
    s_times, p_times, s_workers, p_workers = [], [], [], []
    for _ in range(args.repeat):
        t, workers, rows_s = listing(python, configs["S"])
        s_times.append(t)
        s_workers.append(workers)
        t, workers, rows_p = listing(python, configs["P"])
        p_times.append(t)
        p_workers.append(workers)
    same = [(r["name"], r["hooks"]) for r in rows_s] == [(r["name"], r["hooks"]) for r in rows_p]
    s, p = summary(s_times), summary(p_times)
    print(f"1. `dihya plugins list --json`, {args.installed} installed, {args.approved} "
          f"approved, {args.repeat} interleaved runs (fresh processes)")
    print(table(["side", "median ms", "p90 ms", "min ms", "workers started per run"], [
        [f"S: {args.approved} in sandbox mode", ms(s["median"]), ms(s["p90"]), ms(s["min"]),
         f"{max(s_workers)}"],
        [f"P: {args.approved} in-process", ms(p["median"]), ms(p["p90"]), ms(p["min"]),
         f"{max(p_workers)}"],
        ["S, first listing (no records yet)", ms(first_t), "", "", f"{first_workers}"],
    ]))
    print(f"same names and hooks on both sides: {same}")
    print(f"S / P: {verdict(s['median'] / p['median'], LIST_TARGET)}")
    print()
    # 2. server worker start
    first = server_start(python, configs["W"], create=True)
    starts, bases, sandboxed_starts, forked_starts = [], [], [], []
    for _ in range(args.repeat):
        starts.append(server_start(python, configs["W"]))
        bases.append(flask_start(python, configs["W"].parent))
        sandboxed_starts.append(server_start(python, configs["S"])["total"])
        forked_starts.append(server_start(python, configs["W"], forked=True))
    totals = [r["total"] for r in starts]
    w, b = summary(totals), summary(bases)
    median = sorted(starts, key=lambda r: r["total"])[len(starts) // 2]
    f = summary([r["total"] for r in forked_starts])
    f_median = sorted(forked_starts, key=lambda r: r["total"])[len(forked_starts) // 2]
    print(f"2. server worker start (create_app), {args.installed} installed, {args.approved} "
          f"approved in-process, {args.repeat} interleaved runs (fresh processes)")
    print(table(["side", "median ms", "p90 ms", "min ms", "build ms", "audit ms",
                 "audit events"], [
        ["create_app, store as it is", ms(w["median"]), ms(w["p90"]), ms(w["min"]),
         ms(median.get("build", 0.0)), ms(median.get("audit", 0.0)),
         str(max(int(r["events"]) for r in starts))],
        ["create_app, first start on a new store", ms(first["total"]), "", "",
         ms(first.get("build", 0.0)), ms(first.get("audit", 0.0)), str(int(first["events"]))],
        [f"create_app, the {args.approved} in sandbox mode (S)",
         ms(summary(sandboxed_starts)["median"]), ms(summary(sandboxed_starts)["p90"]),
         ms(summary(sandboxed_starts)["min"]), "", "", ""],
        ["dihya serve worker: forked after import_core", ms(f["median"]), ms(f["p90"]),
         ms(f["min"]), ms(f_median.get("build", 0.0)), ms(f_median.get("audit", 0.0)),
         str(max(int(r["events"]) for r in forked_starts))],
        ["baseline: import Flask, Flask(...)", ms(b["median"]), ms(b["p90"]), ms(b["min"]),
         "", "", ""],
    ]))
    print(f"start / baseline: {w['median'] / b['median']:.1f}x; "
          f"start: {verdict_at_most(w['median'] * 1000, START_TARGET_MS)}; without the build: "
          f"{ms(w['median'] - median.get('build', 0.0))} ms")
    print(f"dihya serve worker / baseline: {f['median'] / b['median']:.1f}x; worker start "
          f"(forked): {verdict_at_most(f['median'] * 1000, START_TARGET_MS)}; without the "
          f"build: {ms(f['median'] - f_median.get('build', 0.0))} ms")
    if args.compare_core:
        compare(python, configs, args)


def compare(python: Path, configs: dict[str, Path], args: argparse.Namespace) -> None:
    """This core and the compared one (`PYTHONPATH=DIR`), interleaved, fresh processes."""
    other = clean_env(PYTHONPATH=str(args.compare_core.resolve()))
    for env in (None, other):  # each core's own caches warm (and their files settled)
        for _ in range(2):
            listing(python, configs["P"], env)
            server_start(python, configs["W"], env=env)
        time.sleep(2.5)
        listing(python, configs["P"], env)
        server_start(python, configs["W"], env=env)
    rows: dict[str, list[list[float]]] = {k: [[], []] for k in (
        "list S", "list P", "start W", "start W build", "forked W", "forked W build")}
    for i in range(args.repeat):
        for side, env in ((0, None), (1, other)) if i % 2 == 0 else ((1, other), (0, None)):
            rows["list S"][side].append(listing(python, configs["S"], env)[0])
            rows["list P"][side].append(listing(python, configs["P"], env)[0])
            start = server_start(python, configs["W"], env=env)
            rows["start W"][side].append(start["total"])
            rows["start W build"][side].append(start.get("build", 0.0))
            forked = server_start(python, configs["W"], forked=True, env=env)
            rows["forked W"][side].append(forked["total"])
            rows["forked W build"][side].append(forked.get("build", 0.0))
    print(f"\n3. this core against {args.compare_core} (PYTHONPATH), {args.repeat} "
          "interleaved rounds (ms, median; fresh processes)")
    out = []
    for key, (this, that) in rows.items():
        a, b = summary(this)["median"], summary(that)["median"]
        out.append([key, ms(a), ms(b), f"{a / b:.2f}x" if b else ""])
    print(table(["row", "this core", "compared core", "this / compared"], out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installed", type=int, default=1000)
    parser.add_argument("--approved", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare-core", type=Path, default=None,
                        help="another checkout's core directory (e.g. main's), interleaved")
    parser.add_argument("--workdir", type=Path, help="keep the setup here (not removed); a "
                        "setup already there is reused (the core rebuilt, the stores removed)")
    args = parser.parse_args()
    if not 0 < args.approved <= args.installed:
        parser.error("--approved must be between 1 and --installed")
    print_machine()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        bench(args.workdir, args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-listing-"))
    try:
        bench(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
