"""Benchmark: discovery + gate + load of N approved plugins against stevedore, N = 10 ... 1000.

For each N (`--plugins 10,100,300,1000`), sets up in a temporary directory removed at the
end: N synthetic plugin wheels (tests/support/wheels.py, each a small module subclassing
GenerationPluginBase with two pass-through hooks), one fresh venv with the core (a wheel
built from this checkout) and the N plugins, and a config approving all N in-process with
fingerprints computed by the core itself. Then, interleaved, in fresh processes:

  * dihya: `build_registry(config)` after the imports — discovery (importlib.metadata),
    the gate (files checked against the verification cache by `stat`, module resolution,
    `.pth` scan, dependencies), load (import + class validation) — and a second
    `build_registry` in the same process (the second listing, a reload);
  * dihya with `DIHYA_VERIFY_CACHE=off`: the same, hashing every file (what the first
    listing after installing or changing a plugin costs);
  * stevedore: `ExtensionManager(group, invoke_on_load=True)` after its import, and a second
    one in the same process (stevedore's rescan). Its entry-point cache is warm (its normal
    state after the first run);
  * and the whole commands, interpreter start included: `dihya plugins list --json`
    against a script printing the stevedore manager's names.

Then, in the largest venv, how the gate's cost per distribution grows with its number of
files and bytes (cache hit: a `stat` per file; miss: every byte hashed).

`--compare-core DIR` (another checkout's `core` directory, e.g. `main`'s) adds the same
dihya sides run with `PYTHONPATH=DIR` (that core's sources in place of the installed one,
the same venv and plugins), interleaved with the others: "main" in the tables.

Targets (issue #16): discovery + gate + load <= 1.2x stevedore at every N; second listing at
the largest N <= 2x stevedore's rescan.

    python benchmarks/discovery_load.py [--plugins 10,100,300,1000] [--repeat R] [--profile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import (
    PHASE_TIMER,
    build_core_wheel,
    clean_env,
    make_venv,
    print_machine,
    summary,
    table,
    verdict,
)

from support.wheels import GROUP, build_plugin_wheel

TARGET = 1.2  # discovery + gate + load, fresh process, dihya / stevedore
RESCAN_TARGET = 2.0  # second listing in the same process, dihya / stevedore's rescan

BASELINE = f"""\
import json
from stevedore import ExtensionManager

manager = ExtensionManager({GROUP!r}, invoke_on_load=True)
print(json.dumps(sorted(manager.names())))
"""

# Writes the config with the core's own functions: discover, inspect_files (the gate's
# fingerprint of the installed files), upsert_allow/write_document (the CLI's writer).
APPROVE = """\
import sys
from pathlib import Path
from dihya.config import AllowEntry
try:
    from dihya.config.edit import read_document, upsert_allow, write_document
except ImportError:  # a core from before dihya.config.edit
    from dihya.config import read_document, upsert_allow, write_document
from dihya.gate.discovery import discover
from dihya.gate.decide import inspect_files

path = Path(sys.argv[1])
doc = read_document(path)
count = 0
for plugin in discover():
    if not plugin.name.startswith("bench"):
        continue
    files, problem = inspect_files(plugin)
    assert files is not None and problem is None, problem
    upsert_allow(doc, AllowEntry(name=plugin.name, distribution=plugin.distribution,
                                 version=plugin.version, fingerprint=files.fingerprint,
                                 mode="in-process"))
    count += 1
write_document(path, doc)
print(count)
"""

CORE_PROBE = """\
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
import dihya.registry as registry
from dihya.config import load_config
from dihya.gate import verifycache
t1 = time.perf_counter()
""" + PHASE_TIMER + """\
config = load_config(Path(sys.argv[1]))
if sys.argv[2] == "phases":
    registry.discover = timed("discover", registry.discover)
    registry.assess_all = timed("gate", registry.assess_all)
    registry.load_plugins = timed("load", registry.load_plugins)
t3 = time.perf_counter()
c3 = time.process_time()
snapshot = registry.build_registry(config)
c4 = time.process_time()
t4 = time.perf_counter()
first = dict(phases)  # the phases of the first build only
cache = verifycache.shared()
hits, misses = (cache.hits, cache.misses) if cache is not None else (0, 0)
try:
    from dihya.gate import pathmemo
    memo = dict(pathmemo.STATS)
except ImportError:
    memo = {}
again = registry.build_registry(config)
t5 = time.perf_counter()
assert all(r.active for r in snapshot.records), [r.message for r in snapshot.records]
try:  # a core that replays a rebuild with nothing changed (dihya.gate.replay)
    from dihya.gate import replay
    replayed = replay.STATS["hit"]
except ImportError:
    replayed = 0
print(json.dumps({"imports": t1 - t0, "build": t4 - t3, "rebuild": t5 - t4,
                  "cpu": c4 - c3, "replayed": replayed,
                  "active": len(snapshot.active), "hits": hits, "misses": misses,
                  "persisted": memo.get("persisted.hit", 0),
                  "memo_misses": sum(v for k, v in memo.items() if k.endswith(".miss")),
                  **first}))
"""

STEVEDORE_PROBE = f"""\
import json, time
t0 = time.perf_counter()
from stevedore import ExtensionManager
t1 = time.perf_counter()
c1 = time.process_time()
manager = ExtensionManager({GROUP!r}, invoke_on_load=True)
c2 = time.process_time()
t2 = time.perf_counter()
again = ExtensionManager({GROUP!r}, invoke_on_load=True)
t3 = time.perf_counter()
print(json.dumps({{"imports": t1 - t0, "build": t2 - t1, "rebuild": t3 - t2,
                  "cpu": c2 - c1, "active": len(manager.names())}}))
"""

# One distribution written by hand into a fresh site directory (RECORD, METADATA, F files of
# B bytes), then `inspect_installed` (miss: every byte hashed) against the verification
# cache's `inspect` once the files are older than its racy window (hit: a stat per file).
GROWTH_PROBE = """\
import json, os, sys, tempfile, time
from pathlib import Path
from dihya.gate import verifycache
from dihya.gate.fingerprint import inspect_installed

def make(root, files, size):
    site = Path(tempfile.mkdtemp(dir=root))
    pkg = site / "growth"
    pkg.mkdir()
    rows = []
    for i in range(files):
        name = "__init__.py" if i == 0 else f"m{i}.py"
        (pkg / name).write_bytes(b"#" * (size - 1) + b"\\n")
        rows.append(f"growth/{name},,")
    info = site / "growth-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\\nName: growth\\nVersion: 1.0\\n")
    rows += ["growth-1.0.dist-info/METADATA,,", "growth-1.0.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\\n".join(rows) + "\\n")
    return info

def best(fn, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)

root = Path(sys.argv[1])
cases = [(1, 1024), (10, 1024), (100, 1024), (1000, 1024), (1, 1 << 20), (1, 10 << 20),
         (10, 1 << 20)]
infos = [make(root, f, b) for f, b in cases]
deadline = time.monotonic() + 60
cache = verifycache.VerifyCache(None)
while not all((cache.inspect(i), cache.remembers(i))[1] for i in infos):
    assert time.monotonic() < deadline, "the cache never remembered the distributions"
    time.sleep(0.2)
out = []
for (files, size), info in zip(cases, infos):
    miss = best(lambda: inspect_installed(info))
    hit = best(lambda: cache.inspect(info))
    out.append({"files": files, "bytes": size, "miss": miss, "hit": hit})
print(json.dumps(out))
"""


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout


def setup(tmp: Path, count: int) -> tuple[Path, Path, Path]:
    """Build the wheels, the venv and the config; return (venv bin, config, work dir)."""
    wheels = tmp / "wheels"
    wheels.mkdir()
    t0 = time.perf_counter()
    core = build_core_wheel(wheels)
    plugins = [build_plugin_wheel(wheels, f"bench{i:04d}") for i in range(count)]
    t1 = time.perf_counter()
    python = make_venv(tmp / "venv", [str(core)], ["--no-deps", *map(str, plugins)])
    t2 = time.perf_counter()
    bindir = python.parent
    work = tmp / "work"
    work.mkdir()
    config = work / "dihya.toml"
    config.write_text("# benchmark config\n[plugins]\nhook_timeout_s = 5.0\n")
    approved = subprocess.run([str(python), "-c", APPROVE, str(config)], check=True,
                              capture_output=True, text=True).stdout.strip()
    if int(approved) != count:
        raise SystemExit(f"approved {approved} plugins, expected {count}")
    t3 = time.perf_counter()
    print(f"setup: {count} wheels {t1 - t0:.1f} s, venv + pip install {t2 - t1:.1f} s, "
          f"approve {t3 - t2:.1f} s")
    return bindir, config, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="10,100,300,1000",
                        help="comma-separated plugin counts, each in its own venv")
    parser.add_argument("--repeat", type=int, default=10, help="measured runs per side and N")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of one `plugins list --json` run")
    parser.add_argument("--no-growth", dest="growth", action="store_false",
                        help="skip the cost-per-distribution part")
    parser.add_argument("--compare-core", type=Path, default=None,
                        help="another checkout's core directory (e.g. main's), run "
                        "interleaved with PYTHONPATH=DIR")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to create the temporary venvs (default: under ~/.cache; "
                        "not /tmp, where stevedore disables its cache)")
    args = parser.parse_args()
    counts = [int(n) for n in str(args.plugins).split(",") if n.strip()]

    print_machine()
    print(f"load average at start: {load()}")
    # stevedore turns its entry-point cache off when sys.executable starts with "/tmp", so
    # a venv there would give a cold baseline; default to a directory under ~/.cache.
    base = args.workdir or Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, list[dict[str, float]]]] = {}
    growth: list[dict[str, float]] = []
    for n in counts:
        tmp = Path(tempfile.mkdtemp(prefix=f"dihya-bench-load-{n}-", dir=base))
        try:
            results[n] = bench(tmp, n, args)
            if n != max(counts):  # what is done so far, in case the run is stopped
                report(args, results, [])
                print(flush=True)
            if args.growth and n == max(counts):
                growth = growth_probe(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end: {load()}")
    report(args, results, growth)


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def bench(tmp: Path, count: int, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    bindir, config, work = setup(tmp, count)
    python = str(bindir / "python")
    # The probes' directory is first on their `sys.path`: not the config's, where `plugins
    # list` writes its SQLite store at each round (a path entry changed in the last 2 s is
    # never trusted by its key, so every build would list it: not "nothing changed").
    probes = tmp / "probes"
    probes.mkdir()
    (probes / "baseline.py").write_text(BASELINE)
    (probes / "core_probe.py").write_text(CORE_PROBE)
    (probes / "stevedore_probe.py").write_text(STEVEDORE_PROBE)
    cache = tmp / "cache"  # XDG_CACHE_HOME: stevedore's cache, the core's pycache and its
    env = clean_env(XDG_CACHE_HOME=str(cache), HOME=str(tmp))  # verification cache
    off = dict(env, DIHYA_VERIFY_CACHE="off")
    core_cmd = [str(bindir / "dihya"), "--config", str(config), "plugins", "list", "--json"]
    base_cmd = [python, str(probes / "baseline.py")]
    probe = [python, str(probes / "core_probe.py"), str(config)]
    sted_probe = [python, str(probes / "stevedore_probe.py")]

    # Sanity: both sides see and load the same N plugins, all active for the core.
    _, out = run(core_cmd, env, work)
    rows = json.loads(out)
    bad = [r for r in rows if r["status"] != "active"]
    if len(rows) != count or bad:
        raise SystemExit(f"core: {len(rows)} rows, not active: {bad[:3]}")
    _, out = run(base_cmd, env, work)
    if sorted(json.loads(out)) != sorted(r["name"] for r in rows):
        raise SystemExit("stevedore does not see the same plugins as the core")
    # The verification cache remembers files only once they are older than its racy
    # window (2 s): wait until a fresh process answers every plugin from it.
    compare = dict(env, PYTHONPATH=str(args.compare_core.resolve())) if args.compare_core \
        else None
    for side_env in (env, compare):
        if side_env is None:
            continue
        deadline = time.monotonic() + 120
        while True:
            _, out = run([*probe, "plain"], side_env, work)
            state = json.loads(out)
            if state["misses"] == 0 and state["hits"] >= count and (
                    side_env is compare or not state.get("memo_misses")):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the verification cache is not used: {state}")
            time.sleep(0.5)
    print(f"  warm: {state}", flush=True)
    for _ in range(args.warmup):
        run(core_cmd, env, work)
        run(base_cmd, env, work)
        run(sted_probe, env, work)
    if not list((cache / "python-entrypoints").glob("*")):
        raise SystemExit("stevedore wrote no entry-point cache: the baseline would be cold "
                         f"(is {tmp} under /tmp? use --workdir elsewhere)")
    if args.profile:
        profile(python, config, work, env)

    out_of: dict[str, list[dict[str, float]]] = {k: [] for k in (
        "core", "core_off", "stevedore", "cmd_core", "cmd_stevedore", "main", "cmd_main")}
    for i in range(args.repeat):
        mode = "phases" if i % 2 else "plain"
        sides = [("core", [*probe, mode], env), ("core_off", [*probe, mode], off),
                 ("stevedore", sted_probe, env)]
        if compare is not None:
            sides.insert(1, ("main", [*probe, mode], compare))
        for key, cmd, e in (sides if i % 2 == 0 else sides[::-1]):
            out_of[key].append(json.loads(run(cmd, e, work)[1]))
        out_of["cmd_core"].append({"wall": run(core_cmd, env, work)[0]})
        if compare is not None:
            out_of["cmd_main"].append({"wall": run(core_cmd, compare, work)[0]})
        out_of["cmd_stevedore"].append({"wall": run(base_cmd, env, work)[0]})
    print(f"  N = {count}: {args.repeat} rounds done (load {load()})", flush=True)
    return out_of


def growth_probe(tmp: Path) -> list[dict[str, float]]:
    python = next(tmp.glob("venv/bin/python"))
    where = tmp / "growth"
    where.mkdir()
    out = subprocess.run([str(python), "-c", GROWTH_PROBE, str(where)], check=True,
                         capture_output=True, text=True, env=clean_env()).stdout
    result: list[dict[str, float]] = json.loads(out)
    return result


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def med(items: list[dict[str, float]], key: str) -> float:
    values = [p[key] for p in items if key in p]
    return summary(values)["median"] if values else float("nan")


def report(args: argparse.Namespace, results: dict[int, dict[str, list[dict[str, float]]]],
           growth: list[dict[str, float]]) -> None:
    print(f"\n== discovery + gate + load, fresh process (ms, median of {args.repeat}; "
          "in-process, after the imports)")
    rows = []
    for n, r in results.items():
        core, off, sted = med(r["core"], "build"), med(r["core_off"], "build"), \
            med(r["stevedore"], "build")
        rows.append([f"N = {n}", ms(core), ms(sted), f"{core / sted:.2f}x",
                     verdict(core / sted, TARGET).split(" ")[0], ms(off),
                     f"{off / sted:.2f}x"])
    print(table(["plugins", "dihya", "stevedore", "ratio", f"<= {TARGET}x",
                 "dihya, cache off", "ratio"], rows))
    print("(dihya: discovery, the gate with the verification cache, load; cache off: every "
          "file hashed, as the first listing after an install or a change)")
    if any(r["main"] for r in results.values()):
        print("\n== the same, this core against the compared core (main), interleaved (ms, "
              "median)")
        rows = []
        for n, r in results.items():
            core, main, sted = (med(r[k], "build") for k in ("core", "main", "stevedore"))
            cmd, cmd_main = med(r["cmd_core"], "wall"), med(r["cmd_main"], "wall")
            rows.append([f"N = {n}", ms(core), ms(main), f"{core / main:.2f}x",
                         f"{core / sted:.2f}x", f"{main / sted:.2f}x", ms(cmd), ms(cmd_main),
                         f"{med(r['core'], 'persisted'):.0f}"])
        print(table(["plugins", "build", "main", "this/main", "this/stevedore",
                     "main/stevedore", "plugins list", "main: list", "memo hits read"],
                    rows))
        print("\n== the same in CPU time of the build (ms, median; the load disturbs it less "
              "than the wall clock)")
        rows = []
        for n, r in results.items():
            core, main, sted = (med(r[k], "cpu") for k in ("core", "main", "stevedore"))
            rows.append([f"N = {n}", ms(core), ms(main), ms(sted), f"{core / main:.2f}x",
                         f"{core / sted:.2f}x", f"{main / sted:.2f}x"])
        print(table(["plugins", "CPU", "main: CPU", "stevedore: CPU", "this/main",
                     "this/stevedore", "main/stevedore"], rows))
        rows = []
        for n, r in results.items():
            rows.append([f"N = {n}", *(ms(med(r["core"], k)) for k in ("discover", "gate",
                                                                        "load")),
                         *(ms(med(r["main"], k)) for k in ("discover", "gate", "load"))])
        print(table(["plugins", "discover", "gate", "load", "main: discover", "main: gate",
                     "main: load"], rows))

    print("\n== where dihya's build goes (ms, median of the runs that timed the phases)")
    rows = []
    for n, r in results.items():
        rows.append([f"N = {n}", *(ms(med(r["core"], k)) for k in ("discover", "gate",
                                                                    "load")),
                     *(ms(med(r["core_off"], k)) for k in ("discover", "gate", "load"))])
    print(table(["plugins", "discover", "gate", "load", "off: discover", "off: gate",
                 "off: load"], rows))

    print("\n== second listing in the same process (ms, median)")
    rows = []
    compared = any(r["main"] for r in results.values())
    for n, r in results.items():
        core, sted = med(r["core"], "rebuild"), med(r["stevedore"], "rebuild")
        replayed = sum(1 for x in r["core"] if x.get("replayed"))
        rows.append([f"N = {n}", ms(core), ms(sted), f"{core / sted:.2f}x",
                     f"{replayed}/{len(r['core'])}"])
        if compared:
            main = med(r["main"], "rebuild")
            rows[-1] += [ms(main), f"{main / sted:.2f}x"]
    print(table(["plugins", "dihya build_registry again", "stevedore rescan", "ratio",
                 "replayed", *(["main", "main ratio"] if compared else [])], rows))
    top = max(results)
    core, sted = med(results[top]["core"], "rebuild"), med(results[top]["stevedore"], "rebuild")
    print(f"second listing, N = {top}: {verdict(core / sted, RESCAN_TARGET)}")

    print("\n== whole command, fresh process (ms, median, interpreter start and imports "
          "included)")
    rows = []
    for n, r in results.items():
        core, sted = med(r["cmd_core"], "wall"), med(r["cmd_stevedore"], "wall")
        rows.append([f"N = {n}", ms(core), ms(sted), f"{core / sted:.2f}x",
                     ms(med(r["core"], "imports")), ms(med(r["stevedore"], "imports"))])
        if compared:
            main = med(r["cmd_main"], "wall")
            rows[-1] += [ms(main), f"{main / sted:.2f}x"]
    print(table(["plugins", "dihya plugins list --json", "stevedore script", "ratio",
                 "imports: dihya.registry", "stevedore",
                 *(["main: list", "main ratio"] if compared else [])], rows))

    if growth:
        print("\n== the gate's file check per distribution, by files and bytes (ms, best "
              "of 5)")
        rows = [[str(g["files"]), f"{g['bytes']:,}", f"{g['files'] * g['bytes']:,}",
                 f"{g['miss'] * 1000:.3f}", f"{g['hit'] * 1000:.3f}"] for g in growth]
        print(table(["files", "bytes each", "bytes in all", "miss: hash all",
                     "hit: stat each"], rows))


def profile(python: str, config: Path, work: Path, env: dict[str, str]) -> None:
    code = ("import cProfile, pstats, sys\n"
            "sys.argv = ['dihya', '--config', sys.argv[1], 'plugins', 'list', '--json']\n"
            "from dihya.cli import main\n"
            "pr = cProfile.Profile(); pr.enable()\n"
            "try:\n    main(standalone_mode=False)\nfinally:\n    pr.disable()\n"
            "    sys.stdout = sys.stderr\n"
            "    pstats.Stats(pr).sort_stats('cumulative').print_stats(40)\n"
            "    pstats.Stats(pr).sort_stats('tottime').print_stats(25)\n")
    out = subprocess.run([python, "-c", code, str(config)], env=env, cwd=work,
                         capture_output=True, text=True, check=True)
    print(out.stderr)


if __name__ == "__main__":
    main()
