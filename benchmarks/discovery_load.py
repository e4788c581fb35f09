"""Benchmark: `dihya plugins list --json` against plain stevedore, N approved plugins.

Sets up, in a temporary directory removed at the end:
  * N synthetic plugin wheels (tests/support/wheels.py), each a small module subclassing
    GenerationPluginBase with the two pass-through hooks;
  * one fresh venv with the core (a wheel built from this checkout) and the N plugins;
  * a config approving all N in-process, with fingerprints computed by the core itself.

Then measures, interleaved (A, B, A, B...), as fresh processes (what an operator runs):
  A. `dihya --config C plugins list --json`: discovery, every file of every plugin hashed
     from disk, module resolution, dependency check, import, class validation, JSON.
  B. `python baseline.py`: `stevedore.ExtensionManager(group, invoke_on_load=True)` over
     the same N, printing their names as JSON. stevedore's entry-point cache
     ($XDG_CACHE_HOME/python-entrypoints) is warm: its normal state after the first run.

and, in fresh processes too, the in-process time of `build_registry` alone (phase by phase)
against the construction of the stevedore manager alone, both after interpreter start and
imports.

    python benchmarks/discovery_load.py [--plugins N] [--repeat R] [--profile]
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

TARGET = 1.3

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
t1 = time.perf_counter()
import dihya.cli  # what the command imports on top (click, the CLI's own imports)
t1b = time.perf_counter()
""" + PHASE_TIMER + """\
t1c = time.perf_counter()
config = load_config(Path(sys.argv[1]))
t2 = time.perf_counter()
if sys.argv[2] == "phases":
    registry.discover = timed("discover", registry.discover)
    registry.assess_all = timed("gate", registry.assess_all)
    registry.load_plugins = timed("load", registry.load_plugins)
t3 = time.perf_counter()
snapshot = registry.build_registry(config)
t4 = time.perf_counter()
first = dict(phases)  # the phases of the first build only
again = registry.build_registry(config)
t5 = time.perf_counter()
assert all(r.active for r in snapshot.records), [r.message for r in snapshot.records]
print(json.dumps({"imports": t1 - t0, "cli_imports": t1b - t1, "config": t2 - t1c,
                  "build": t4 - t3,
                  "rebuild": t5 - t4, "active": len(snapshot.active), **first}))
"""

STEVEDORE_PROBE = f"""\
import json, time
t0 = time.perf_counter()
from stevedore import ExtensionManager
t1 = time.perf_counter()
manager = ExtensionManager({GROUP!r}, invoke_on_load=True)
t2 = time.perf_counter()
again = ExtensionManager({GROUP!r}, invoke_on_load=True)
t3 = time.perf_counter()
print(json.dumps({{"imports": t1 - t0, "build": t2 - t1, "rebuild": t3 - t2,
                  "active": len(manager.names())}}))
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
    parser.add_argument("--plugins", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=20, help="measured runs per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of one `plugins list --json` run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to create the temporary venv (default: under ~/.cache; "
                        "not /tmp, where stevedore disables its cache)")
    args = parser.parse_args()

    print_machine()
    # stevedore turns its entry-point cache off when sys.executable starts with "/tmp", so
    # a venv there would give a cold baseline; default to a directory under ~/.cache.
    base = args.workdir or Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-load-", dir=base))
    try:
        bench(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(tmp: Path, args: argparse.Namespace) -> None:
    bindir, config, work = setup(tmp, args.plugins)
    python = str(bindir / "python")
    (work / "baseline.py").write_text(BASELINE)
    (work / "core_probe.py").write_text(CORE_PROBE)
    (work / "stevedore_probe.py").write_text(STEVEDORE_PROBE)
    cache = tmp / "cache"  # XDG_CACHE_HOME: stevedore's cache and the core's private pycache
    env = clean_env(XDG_CACHE_HOME=str(cache), HOME=str(tmp))
    core_cmd = [str(bindir / "dihya"), "--config", str(config), "plugins", "list", "--json"]
    base_cmd = [python, str(work / "baseline.py")]
    start_cmd = [python, "-c", "pass"]

    # Sanity: both sides see and load the same N plugins, all active for the core.
    _, out = run(core_cmd, env, work)
    rows = json.loads(out)
    bad = [r for r in rows if r["status"] != "active"]
    if len(rows) != args.plugins or bad:
        raise SystemExit(f"core: {len(rows)} rows, not active: {bad[:3]}")
    _, out = run(base_cmd, env, work)
    if sorted(json.loads(out)) != sorted(r["name"] for r in rows):
        raise SystemExit("stevedore does not see the same plugins as the core")
    for _ in range(args.warmup):
        run(core_cmd, env, work)
        run(base_cmd, env, work)
    caches = list((cache / "python-entrypoints").glob("*"))
    if not caches:
        raise SystemExit("stevedore wrote no entry-point cache: the baseline would be cold "
                         f"(is {tmp} under /tmp? use --workdir elsewhere)")
    # The cold baseline: stevedore with its cache disabled (a `.disable` file), as it is for
    # any interpreter under /tmp; it scans every dist-info like the core does.
    cold_cache = tmp / "cache-cold"
    (cold_cache / "python-entrypoints").mkdir(parents=True)
    (cold_cache / "python-entrypoints" / ".disable").write_text("")
    cold_env = clean_env(XDG_CACHE_HOME=str(cold_cache), HOME=str(tmp))

    if args.profile:
        profile(python, config, work, env)

    core_t: list[float] = []
    base_t: list[float] = []
    cold_t: list[float] = []
    start_t: list[float] = []
    for _ in range(args.repeat):
        core_t.append(run(core_cmd, env, work)[0])
        base_t.append(run(base_cmd, env, work)[0])
        cold_t.append(run(base_cmd, cold_env, work)[0])
        start_t.append(run(start_cmd, env, work)[0])

    probes: dict[str, list[dict[str, float]]] = {"core": [], "stevedore": []}
    for i in range(max(5, args.repeat // 2)):
        mode = "phases" if i % 2 else "plain"
        _, out = run([python, str(work / "core_probe.py"), str(config), mode], env, work)
        probes["core"].append(json.loads(out))
        _, out = run([python, str(work / "stevedore_probe.py")], env, work)
        probes["stevedore"].append(json.loads(out))

    report(args, core_t, base_t, cold_t, start_t, probes)


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def report(args: argparse.Namespace, core_t: list[float], base_t: list[float],
           cold_t: list[float], start_t: list[float],
           probes: dict[str, list[dict[str, float]]]) -> None:
    c, b, s = summary(core_t), summary(base_t), summary(start_t)
    k = summary(cold_t)
    n = args.plugins
    print(f"\n== fresh processes, {n} approved plugins, {args.repeat} interleaved runs each "
          "(ms, wall clock incl. interpreter start)")
    rows = [
        ["A  dihya plugins list --json", ms(c["median"]), ms(c["p90"]), ms(c["p99"]),
         ms(c["min"])],
        ["B  stevedore ExtensionManager (warm cache)", ms(b["median"]), ms(b["p90"]),
         ms(b["p99"]), ms(b["min"])],
        ["   stevedore, cache disabled (reference)", ms(k["median"]), ms(k["p90"]),
         ms(k["p99"]), ms(k["min"])],
        ["   python -c pass (floor)", ms(s["median"]), ms(s["p90"]), ms(s["p99"]),
         ms(s["min"])],
    ]
    print(table(["side", "median", "p90", "p99", "min"], rows))
    ratio = c["median"] / b["median"]
    print(f"ratio A/B (median): {ratio:.2f}x   target <= {TARGET}x: {verdict(ratio, TARGET)}")
    print(f"ratio A/B above the interpreter floor: "
          f"{(c['median'] - s['median']) / (b['median'] - s['median']):.2f}x")

    core = probes["core"]
    sted = probes["stevedore"]

    def med(items: list[dict[str, float]], key: str) -> str:
        values = [p[key] for p in items if key in p]
        return ms(summary(values)["median"]) if values else "-"

    print(f"\n== in-process, after interpreter start (ms, median of {len(core)} fresh "
          "processes)")
    rows = [
        ["imports (dihya.registry + config / stevedore)", med(core, "imports"),
         med(sted, "imports")],
        ["  + the rest of `import dihya.cli`", med(core, "cli_imports"), "-"],
        ["load config (tomllib + validation)", med(core, "config"), "-"],
        ["build_registry / ExtensionManager(...)", med(core, "build"), med(sted, "build")],
        ["  discover (importlib.metadata)", med(core, "discover"), "-"],
        ["  gate (hash every file, resolve, deps)", med(core, "gate"), "-"],
        ["  load (stevedore import + validate)", med(core, "load"), "-"],
        ["second build in the same process (reload)", med(core, "rebuild"),
         med(sted, "rebuild")],
    ]
    print(table(["step", "core", "stevedore"], rows))
    build_ratio = (summary([p["build"] for p in core])["median"]
                   / summary([p["build"] for p in sted])["median"])
    print(f"build_registry / ExtensionManager construction: {build_ratio:.2f}x")


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
