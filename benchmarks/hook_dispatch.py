"""Benchmark: one `before_generation(needs)` dispatch to N no-op plugins, core vs pluggy.

Sets up N real synthetic plugin wheels (tests/support/wheels.py, pass-through hooks),
installed into a temporary site directory and loaded by the core's own `build_registry`,
then times, interleaved (A, B, C, A, B, C...), one call of the hook to every plugin:

  A. core, bare: the executor's per-call loop, `InProcessExecutor.call_at` for each
     active plugin with the frozen needs the pipeline holds (a clock read, a copy-on-write
     view of the arguments, the log capture, the call, the executor's clock read and
     deadline check): no return check, no report;
  R. core, executor round: `sandbox.rounds.call_round`, the in-process executor running
     the whole round the pipeline runs (A's work, plus the unchanged-return check and a
     report row per plugin), without the pipeline's set-up (cores without rounds: absent);
  B. core, guarded: the pipeline's real round (`pipeline.run_before_generation` through
     `pipeline.hook_caller` with the registry's executors): view + call + freezing and
     checking each return (validated only when changed) + timing + report, and the
     round's set-up (the guarded caller; the frozen context, made only when a hook
     may take it: these plugins take the needs alone, as pluggy's do);
  C. pluggy: `PluginManager` with N implementations of the hookspec
     `before_generation(needs)`, called as `pm.hook.before_generation(needs=...)`.

`--compare-core DIR` (another checkout's `core` directory, e.g. `main`'s): the same sides
for that core, run in a child process (`PYTHONPATH=DIR`) whose samples alternate with this
process's (one sample of every side here, then one there), each core against the pluggy
of its own process; the ratios of the two cores are printed side by side.

If pluggy or the core is missing here, the script makes a temporary venv with both and
runs itself there.

    python benchmarks/hook_dispatch.py [--plugins N] [--repeat R] [--calls C] [--compare-core DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from time import perf_counter
from typing import Any

from _common import (
    best_per_call,
    build_core_wheel,
    make_venv,
    print_machine,
    summary,
    table,
    verdict,
)

from support.wheels import build_plugin_wheel, pip_install

TARGETS = {"bare": 1.5, "guarded": 3.0}  # issue #16
NEEDS: dict[str, Any] = {
    "project": "shop",
    "stack": "flask-api",
    "entities": [
        {"name": "Item", "fields": [{"name": "label", "type": "string", "max_length": 80},
                                    {"name": "price", "type": "float"}]},
        {"name": "Order", "fields": [{"name": "placed", "type": "datetime"}]},
    ],
}


def reexec_in_venv(argv: list[str]) -> None:
    """Run this script again in a temporary venv holding the core and pluggy."""
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-hooks-venv-"))
    try:
        core = build_core_wheel(tmp / "wheels")
        python = make_venv(tmp / "venv", [str(core), "pluggy>=1.5"])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        code = subprocess.run([str(python), __file__, "--in-venv", *argv], env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=200,
                        help="measured samples per side (each the mean of --calls calls)")
    parser.add_argument("--calls", type=int, default=50, help="dispatches per sample")
    parser.add_argument("--compare-core", type=Path, default=None,
                        help="another checkout's core directory, measured interleaved")
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-samples", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_samples:  # the child of --compare-core: samples on request
        tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-hooks-"))
        try:
            serve_samples(tmp, args)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    missing = [m for m in ("dihya", "pluggy") if importlib.util.find_spec(m) is None]
    if missing and not args.in_venv:
        print(f"{', '.join(missing)} not importable here: running in a temporary venv")
        reexec_in_venv(sys.argv[1:])
    print_machine()
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-hooks-"))
    try:
        bench(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def core_records(tmp: Path, count: int) -> tuple[list[Any], float]:
    """N active plugin records, from real wheels, through discover/gate/load."""
    from dihya.config import AllowEntry, Config
    from dihya.gate.decide import inspect_files
    from dihya.gate.discovery import discover
    from dihya.registry import build_registry

    site = tmp / "site"
    names = [f"hookbench{i:03d}" for i in range(count)]
    wheels = [build_plugin_wheel(tmp / "wheels", name) for name in names]
    pip_install(sys.executable, *map(str, wheels), target=site)
    path = [str(site), *sys.path]
    sys.path.insert(0, str(site))
    entries = []
    for plugin in discover(path=path):
        if plugin.name in names:
            files, problem = inspect_files(plugin)
            assert files is not None and problem is None, problem
            entries.append(AllowEntry(name=plugin.name, distribution=plugin.distribution,
                                      version=plugin.version, fingerprint=files.fingerprint,
                                      mode="in-process"))
    config = Config(path=tmp / "dihya.toml", exists=False, allow=tuple(entries))
    snapshot = build_registry(config, path=path)
    active = [r for r in snapshot.active if r.name in names]
    if len(active) != count:
        raise SystemExit(f"{len(active)} of {count} plugins active: "
                         f"{[r.message for r in snapshot.records if not r.active][:3]}")
    return active, snapshot.config.hook_timeout_s


def pluggy_manager(count: int) -> Any:
    import pluggy

    spec = pluggy.HookspecMarker("bench")
    impl = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
            """Return the needs."""
            raise NotImplementedError

    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(Spec)
    for i in range(count):
        cls = type(f"P{i}", (), {
            "before_generation": impl(lambda self, needs: needs),
        })
        pm.register(cls(), name=f"p{i}")
    return pm


def sides_of(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int], Any]:
    """The measured sides (name -> a function making one dispatch), calls per sample of
    each, and the frozen needs, for the core importable here."""
    from dihya.needs import check_needs, validate_needs
    from dihya.pipeline import HookResult, default_executor, hook_caller, run_before_generation
    from dihya.sandbox.cow import freeze
    from dihya.sandbox.executor import InProcessExecutor

    try:
        from dihya.pipeline import _needs_check, generation_context
        from dihya.sandbox.rounds import call_round
    except ImportError:  # a core without rounds
        call_round = None

    records, timeout = core_records(tmp, args.plugins)
    needs = freeze(check_needs(NEEDS))  # what the pipeline holds and hands to each hook
    executor = InProcessExecutor()
    pm = pluggy_manager(args.plugins)
    hook = pm.hook.before_generation

    def bare() -> None:
        # the executor's call as the pipeline made it before rounds: the caller's clock
        # read is the start of the deadline, the executor's the end of it
        call = executor.call_at
        kwargs = {"needs": needs}
        for record in records:
            call(record, "before_generation", kwargs, timeout, perf_counter())

    def on_fail(message: str) -> None:
        raise RuntimeError(message)

    report: list[HookResult] = []

    def guarded() -> None:
        report.clear()
        call = hook_caller(report, default_executor, timeout, on_fail)
        run_before_generation(records, needs, call)

    def plug() -> None:
        hook(needs=needs)

    def revalidate() -> None:
        # The round when every return is validated in full (a plugin that changed the
        # needs; before the fast path, every round): the cost of the schema check.
        report.clear()
        call = hook_caller(report, default_executor, timeout, on_fail)
        for record in records:
            call(record, "before_generation", {"needs": needs}, validate_needs)

    # Sanity: every side reaches every plugin, the guarded round reports them all ok.
    guarded()
    assert [h.status for h in report] == ["ok"] * args.plugins, report
    assert len(hook(needs=needs)) == args.plugins
    sides: dict[str, Any] = {"bare": bare}
    if call_round is not None:
        guard = hook_caller(report, default_executor, timeout, on_fail)
        round_kwargs = {"needs": needs, "context": generation_context(records)}

        def executor_round() -> None:
            report.clear()
            call_round(records, "before_generation", round_kwargs, "needs", _needs_check,
                       guard)

        executor_round()
        assert [h.status for h in report] == ["ok"] * args.plugins, report
        sides["round"] = executor_round
    sides.update({"guarded": guarded, "pluggy": plug, "revalidate": revalidate})
    counts = {k: args.calls for k in sides}
    counts["revalidate"] = max(1, args.calls // 25)  # ~100x slower: fewer calls per sample
    for _ in range(max(5, args.repeat // 10)):  # warm-up
        for fn in sides.values():
            fn()
    return sides, counts, needs


def sample(sides: dict[str, Any], counts: dict[str, int]) -> dict[str, float]:
    """One sample of every side: seconds per dispatch, the mean of its calls."""
    out = {}
    for key, fn in sides.items():
        calls = counts[key]
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out[key] = (time.perf_counter() - start) / calls
    return out


def serve_samples(tmp: Path, args: argparse.Namespace) -> None:
    """The `--compare-core` child: set up, say which sides it has, then one sample per
    line read from stdin, as a JSON line on stdout."""
    sides, counts, _ = sides_of(tmp, args)
    print(json.dumps(sorted(sides)), flush=True)
    for line in sys.stdin:
        if line.strip() != "sample":
            break
        print(json.dumps(sample(sides, counts)), flush=True)


LABELS = {"bare": "A  core bare (executor.call_at loop: view + call)",
          "round": "R  core executor round (call_round: + check, row)",
          "guarded": "B  core guarded (pipeline round)",
          "pluggy": "C  pluggy pm.hook.before_generation",
          "revalidate": "   core guarded, every return re-validated"}


def bench(tmp: Path, args: argparse.Namespace) -> None:
    sides, counts, needs = sides_of(tmp, args)
    child = None
    if args.compare_core:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(args.compare_core.resolve())
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve-samples", "--plugins", str(args.plugins),
             "--repeat", str(args.repeat), "--calls", str(args.calls)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdin is not None and child.stdout is not None
        other_sides = json.loads(child.stdout.readline())
    samples: dict[str, list[float]] = {k: [] for k in sides}
    other: dict[str, list[float]] = {}
    loads = [os.getloadavg()[0]]
    try:
        for _ in range(args.repeat):
            for key, value in sample(sides, counts).items():
                samples[key].append(value)
            if child is not None:
                child.stdin.write("sample\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
                for key, value in json.loads(child.stdout.readline()).items():  # type: ignore[union-attr]
                    other.setdefault(key, []).append(value)
    finally:
        if child is not None:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(timeout=60)
    loads.append(os.getloadavg()[0])
    print(f"load average (1 min) at the start / end: {loads[0]:.2f} / {loads[1]:.2f}")
    report_core("this core", samples, args)
    if child is not None:
        assert sorted(other) == sorted(other_sides), other
        report_core(f"compare core ({args.compare_core}), interleaved", other, args)
        s, o = ({k: summary(v) for k, v in d.items()} for d in (samples, other))
        print("\n== this core / compare core (medians; each against its own pluggy)")
        rows = []
        for key in ("bare", "round", "guarded"):
            if key in s:
                mine = s[key]["median"] / s["pluggy"]["median"]
                theirs = (o[key]["median"] / o["pluggy"]["median"]) if key in o else None
                rows.append([LABELS[key], f"{mine:.2f}x",
                             f"{theirs:.2f}x" if theirs is not None else "-",
                             f"{s[key]['median'] / o[key]['median']:.2f}" if key in o else "-"])
        print(table(["side", "this vs pluggy", "compare vs pluggy", "this / compare"], rows))
    breakdown(needs, samples, args.plugins)


def report_core(title: str, samples: dict[str, list[float]], args: argparse.Namespace) -> None:
    s = {k: summary(v) for k, v in samples.items()}
    us = lambda x: f"{x * 1e6:.2f}"  # noqa: E731
    print(f"\n== {title}: one before_generation(needs) dispatch to {args.plugins} no-op "
          f"plugins (µs per dispatch; {args.repeat} interleaved samples of {args.calls} "
          "calls each)")
    rows = []
    for key, label in LABELS.items():
        if key in s:
            rows.append([label, us(s[key]["median"]), us(s[key]["p90"]), us(s[key]["p99"]),
                         us(s[key]["min"]), f"{s[key]['median'] / s['pluggy']['median']:.2f}x"])
    print(table(["side", "median", "p90", "p99", "min", "vs pluggy"], rows))
    for key, target in TARGETS.items():
        ratio = s[key]["median"] / s["pluggy"]["median"]
        print(f"{key:>7}: target <= {target}x pluggy: {verdict(ratio, target)}")
    per = {k: f"{s[k]['median'] * 1e6 / args.plugins:.2f}" for k in s}
    print("per plugin (µs): " + ", ".join(f"{k} {v}" for k, v in per.items()
                                          if k != "revalidate"))


def breakdown(needs: dict[str, Any], samples: dict[str, list[float]], count: int) -> None:
    """What one plugin's share of the guarded round costs, piece by piece."""
    from dihya.needs import validate_needs
    from dihya.sandbox.cow import freeze, thaw, view

    given = view(needs)
    plain = thaw(needs)

    def each(fn: Any, n: int = 2000) -> float:
        return best_per_call(fn, n)

    from operator import is_

    from dihya.pipeline import OK, HookResult
    from dihya.pluginlog.capture import CALLS

    values, keys = tuple(dict.values(needs)), tuple(dict.keys(needs))

    def unchanged() -> bool:  # the round's check of a view that came back
        return all(map(is_, dict.values(given), values)) and tuple(dict.keys(given)) == keys

    def capture() -> None:  # the executor's log capture around a call that logs nothing
        stack = CALLS.stack
        depth = len(stack)
        stack.append("name")
        if len(stack) == depth + 1:
            stack.pop()

    report: list[Any] = []
    new_row = tuple.__new__

    def row() -> None:
        report.append(new_row(HookResult, ("name", "before_generation", OK, 0.1, None,
                                           False)))
        report.clear()

    rows = [
        ["view(needs) (what a hook gets)", each(lambda: view(needs))],
        ["the round's unchanged-view check", each(unchanged)],
        ["freeze(the view returned unchanged) -> the needs", each(lambda: freeze(given))],
        ["thaw(needs) (a deep copy: what each hook got before)", each(lambda: thaw(needs))],
        ["freeze(a changed return: plain data)", each(lambda: freeze(plain))],
        ["validate_needs(returned) (full schema, if changed)",
         each(lambda: validate_needs(plain), 200)],
        ["time.perf_counter() x2 (one pair per call)",
         each(lambda: (time.perf_counter(), time.perf_counter()))],
        ["log capture of a call that logs nothing (call stack)", each(capture)],
        ["a report row (HookResult) appended", each(row)],
    ]
    print("\n== pieces, per plugin call (µs, best of 5)")
    print(table(["piece", "µs"], [[r[0], f"{r[1] * 1e6:.2f}"] for r in rows]))


if __name__ == "__main__":
    main()
