"""Benchmark: a warm sandboxed hook call against in-process and against a process per call.

Sets up one real synthetic plugin wheel (tests/support/wheels.py, pass-through hooks)
installed into a temporary site directory, approves it twice through the core's own
`build_registry` (once `in-process`, once `sandbox`) and times, interleaved (A, B, C, A,
B, C...), one `before_generation(needs)` call with a valid needs document of about 10 KB:

  A. sandbox, warm: `SandboxExecutor.call` (the record's executor, what the pipeline
     calls) to the plugin's running worker, with every isolation layer this machine
     allows (`outer="auto"`): request framed as JSON, pipe, the worker decodes, calls,
     encodes, pipe, the parent decodes;
  B. the same with `outer="none"` (no bwrap/unshare around the worker; the worker's own
     layers stay: rlimits, no-new-privs, Landlock, seccomp);
  C. in-process: `InProcessExecutor.call` (deep copy of the arguments, the call, the
     deadline check);
  D. a process per call: `python -I -c` importing the plugin, reading the needs JSON
     from stdin, calling the hook and writing the result JSON (no isolation layers: a
     lower bound for a confined process per call);
  E. the peer: a `multiprocessing` pipe with pickle to a forked process that imports
     the plugin and answers each call with what the hook returned (`conn.send(needs)`,
     the child calls the hook, `conn.send(result)`, `conn.recv()`): no isolation, no
     validation, both ways the whole 10 KB. Target: A <= 150 µs and A <= 1x E.

Also: the cold start of a worker (`Worker(...)` until its hello, then closed), with all
layers and with `outer="none"`; the resident memory of a warm worker (VmRSS from
/proc/PID/status; with bwrap the Popen pid is bwrap itself, and the Python worker is its
newest descendant: both are shown); the pieces of a round trip (encode/decode of the
frames with the protocol's msgspec codec and, for reference, the standard library's json,
a `ping` round trip). If the core is not importable here, the script makes a
temporary venv with a wheel of it built from this checkout and runs itself there.

    python benchmarks/sandbox_roundtrip.py [--repeat R] [--calls C] [--spawns S] [--cold N]
                                           [--kib K]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import (
    best_per_call,
    build_core_wheel,
    clean_env,
    make_venv,
    print_machine,
    summary,
    table,
)

from support.wheels import build_plugin_wheel, pip_install

NAME = "rtbench"
GROUP = "dihya.generation_plugins"
TARGET_MEDIAN_US = 150.0
TARGET_VS_PIPE = 1.0
TARGET_SPEEDUP = 100.0
TARGET_RSS_MIB = 40.0
HOOK = "before_generation"

PER_CALL = '''\
import json, sys
sys.path.insert(0, {site!r})
from dihya_plugin_{name} import Plugin
needs = json.loads(sys.stdin.buffer.read())
sys.stdout.write(json.dumps(Plugin().before_generation(needs)))
'''


def reexec_in_venv(argv: list[str]) -> None:
    """Run this script again in a temporary venv holding the core built from this checkout."""
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-sbx-venv-"))
    try:
        core = build_core_wheel(tmp / "wheels")
        python = make_venv(tmp / "venv", [str(core)])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        code = subprocess.run([str(python), __file__, "--in-venv", *argv], env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(code)


def pipe_child(conn: Any) -> None:
    """The peer's other end: call the plugin's hook on what arrives, send back the result."""
    from dihya_plugin_rtbench import Plugin  # type: ignore[import-not-found]

    plugin = Plugin()
    while True:
        needs = conn.recv()
        if needs is None:
            return
        conn.send(plugin.before_generation(needs))


@contextlib.contextmanager
def pipe_peer() -> Iterator[Callable[[Any], Any]]:
    """A forked process behind a `multiprocessing` pipe (pickle both ways)."""
    import multiprocessing

    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=pipe_child, args=(child,),
                                                        daemon=True)
    proc.start()

    def call(needs: Any) -> Any:
        parent.send(needs)
        return parent.recv()

    try:
        yield call
    finally:
        parent.send(None)
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def make_needs(size: int) -> dict[str, Any]:
    """A valid needs document whose compact JSON is at least `size` bytes (deterministic)."""
    types = ("string", "text", "integer", "float", "boolean", "date", "datetime")
    needs: dict[str, Any] = {
        "project": "warehouse", "title": "Warehouse inventory",
        "description": "Stock, locations and movements of a small warehouse.",
        "version": "1.2.0", "stack": "flask-api", "entities": [],
    }
    i = 0
    while len(json.dumps(needs, separators=(",", ":"))) < size:
        fields: list[dict[str, Any]] = []
        for j in range(8):
            ftype = types[(i + j) % len(types)]
            field: dict[str, Any] = {"name": f"attribute_{j}", "type": ftype,
                                     "required": j % 2 == 0,
                                     "description": f"Attribute {j} of entity {i}: a value "
                                                    f"of type {ftype}."}
            if ftype == "string":
                field["max_length"] = 80 + j
            fields.append(field)
        needs["entities"].append({"name": f"Entity{i}", "fields": fields,
                                  "description": f"Entity number {i} of the warehouse."})
        i += 1
    return needs


@contextlib.contextmanager
def outer_layer(outer: str) -> Iterator[None]:
    """Workers started inside use `SandboxPolicy(outer=...)` (the policy's other fields kept;
    without bwrap's view a root backend may need `allow_root` to start one at all)."""
    import attrs

    from dihya.sandbox import pool as sandbox

    original = sandbox.launch

    def launch(argv: list[str], policy: Any) -> Any:
        return original(argv, attrs.evolve(policy, outer=outer,
                                           allow_root=policy.allow_root or outer == "none"))

    sandbox.launch = launch  # type: ignore[assignment]
    try:
        yield
    finally:
        sandbox.launch = original  # type: ignore[assignment]


def descendants(pid: int) -> list[int]:
    """`pid` and its descendants, parents first (from /proc/PID/task/*/children)."""
    out = [pid]
    for current in out:
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            out += [int(c) for c in children if int(c) not in out]
    return out


def proc_facts(pid: int) -> tuple[str, float]:
    """(program name, VmRSS in MiB) of a process."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "?", float("nan")
    rss = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    return os.path.basename(argv0) or "?", rss / 1024


def worker_memory(pid: int) -> tuple[str, float, float]:
    """(chain description, RSS of the Python worker, RSS of the whole chain), in MiB."""
    chain = [(p, *proc_facts(p)) for p in descendants(pid)]
    python = [c for c in chain if c[1].startswith("python")]
    worker_rss = python[-1][2] if python else float("nan")
    text = " -> ".join(f"{name}[{p}] {rss:.1f}" for p, name, rss in chain)
    return text, worker_rss, sum(c[2] for c in chain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=20,
                        help="timed calls per warm side per round (each call timed alone)")
    parser.add_argument("--spawns", type=int, default=40, help="process-per-call samples")
    parser.add_argument("--cold", type=int, default=8, help="cold starts per configuration")
    parser.add_argument("--kib", type=float, default=10.0, help="needs payload size")
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if importlib.util.find_spec("dihya") is None and not args.in_venv:
        print("dihya not importable here: running in a temporary venv")
        reexec_in_venv(sys.argv[1:])
    print_machine()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-sbx-"))
    # The worker (as the sandbox user, when the backend is root) must reach the site dir.
    os.chmod(tmp, 0o755)
    try:
        bench(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def setup(tmp: Path) -> tuple[list[str], str, Any]:
    """Install the plugin into a site dir; return (import path, site dir, its AllowEntry)."""
    from dihya.config import AllowEntry
    from dihya.gate.decide import inspect_files
    from dihya.gate.discovery import discover

    site = tmp / "site"
    wheel = build_plugin_wheel(tmp / "wheels", NAME)
    pip_install(sys.executable, str(wheel), target=site)
    os.chmod(site, 0o755)
    path = [str(site), *sys.path]
    sys.path.insert(0, str(site))  # the in-process side imports the plugin here
    plugin = next(p for p in discover(path=path) if p.name == NAME)
    files, problem = inspect_files(plugin)
    assert files is not None and problem is None, problem
    entry = AllowEntry(name=NAME, distribution=plugin.distribution, version=plugin.version,
                       fingerprint=files.fingerprint, mode="in-process")
    return path, str(site), entry


def bench(tmp: Path, args: argparse.Namespace) -> None:
    import attrs

    from dihya.config import Config, SandboxSettings
    from dihya.needs import check_needs
    from dihya.registry import build_registry
    from dihya.sandbox import protocol
    from dihya.sandbox.pool import SandboxPool, Worker, WorkerSpec

    path, site, entry = setup(tmp)
    needs = check_needs(make_needs(int(args.kib * 1024)))
    payload = json.dumps(needs, separators=(",", ":")).encode()
    # Warm means warm: no recycling (max_calls) or idle reaping during the run.
    settings = SandboxSettings(max_calls=10**9, idle_s=86400.0)
    timeout = 5.0

    def snapshot(mode: str, outer: str | None) -> Any:
        config = Config(path=tmp / "dihya.toml", exists=False, hook_timeout_s=timeout,
                        allow=(attrs.evolve(entry, mode=mode),), sandbox=settings)
        if outer is None:
            return build_registry(config, path=path)
        with outer_layer(outer):
            return build_registry(config, path=path, sandbox=SandboxPool(settings))

    snaps = {"in-process": snapshot("in-process", None), "auto": snapshot("sandbox", "auto"),
             "none": snapshot("sandbox", "none")}
    try:
        records = {k: s.get(NAME) for k, s in snaps.items()}
        for key, record in records.items():
            if record is None or not record.active:
                raise SystemExit(f"{key}: the plugin is not active: "
                                 f"{record.message if record else 'missing'}")
        workers = {k: snaps[k].sandbox.worker(NAME) for k in ("auto", "none")}
        run(args, needs, payload, site, records, workers, timeout)
        memory(workers)
        pieces(needs, workers["auto"], protocol)
    finally:
        for snap in snaps.values():
            snap.close()
    cold_starts(args, path, entry, settings, Worker, WorkerSpec)


def run(args: argparse.Namespace, needs: dict[str, Any], payload: bytes, site: str,
        records: dict[str, Any], workers: dict[str, Any], timeout: float) -> None:
    for key in ("auto", "none"):
        hello = workers[key].hello
        print(f"isolation layers, outer={key}: {', '.join(hello.layers)}")
        for warning in hello.warnings:
            print(f"  warning: {warning}")
    print(f"needs payload: {len(payload)} bytes of compact JSON, "
          f"{len(needs['entities'])} entities x 8 fields")
    print()

    def warm(record: Any) -> Callable[[], Any]:
        executor = record.executor
        return lambda: executor.call(record, HOOK, {"needs": needs}, timeout)

    with pipe_peer() as peer:
        run_sides(args, needs, payload, site, records, timeout, warm, peer)


def run_sides(args: argparse.Namespace, needs: dict[str, Any], payload: bytes, site: str,
              records: dict[str, Any], timeout: float, warm: Callable[[Any], Any],
              peer: Callable[[Any], Any]) -> None:
    plain = json.loads(payload)
    sides = {"auto": warm(records["auto"]), "none": warm(records["none"]),
             "in-process": warm(records["in-process"]), "pipe": lambda: peer(plain)}
    for key, fn in sides.items():  # the same answer on every side
        assert fn() == needs, key
    code = PER_CALL.format(site=site, name=NAME)
    env = clean_env()

    def spawn() -> None:
        done = subprocess.run([sys.executable, "-I", "-c", code], input=payload,
                              capture_output=True, env=env, check=True)
        if json.loads(done.stdout) != needs:
            raise SystemExit("the process-per-call baseline returned something else")

    for _ in range(3):
        spawn()  # warm-up: byte code written, page cache filled
    for _ in range(max(20, args.repeat // 10)):
        for fn in sides.values():
            for _ in range(args.calls):
                fn()
    samples: dict[str, list[float]] = {k: [] for k in (*sides, "spawn")}
    every = max(1, args.repeat // max(1, args.spawns))
    clock = time.perf_counter
    for r in range(args.repeat):
        for key, fn in sides.items():
            out = samples[key]
            for _ in range(args.calls):
                start = clock()
                fn()
                out.append(clock() - start)
        if r % every == 0 and len(samples["spawn"]) < args.spawns:
            start = clock()
            spawn()
            samples["spawn"].append(clock() - start)

    s = {k: summary(v) for k, v in samples.items()}
    us = lambda x: f"{x * 1e6:,.1f}"  # noqa: E731
    print(f"== one {HOOK}(needs) call, ~{len(payload) / 1024:.1f} KB needs (µs per call; "
          f"{args.repeat} interleaved rounds, warm sides {args.calls} calls each, timed "
          f"one by one)")
    labels = {"auto": "A  sandbox, warm, all layers (outer=auto)",
              "none": "B  sandbox, warm, outer=none (inner layers only)",
              "in-process": "C  in-process (InProcessExecutor: view + call)",
              "spawn": "D  process per call (python -I -c, no layers)",
              "pipe": "E  peer: multiprocessing pipe + pickle, forked"}
    rows = []
    for key, label in labels.items():
        rows.append([label, us(s[key]["median"]), us(s[key]["p90"]), us(s[key]["p99"]),
                     us(s[key]["min"]), f"{int(s[key]['n'])}",
                     f"{s[key]['median'] / s['auto']['median']:.3g}x",
                     f"{s[key]['median'] / s['pipe']['median']:.3g}x"])
    print(table(["side", "median", "p90", "p99", "min", "n", "vs A", "vs E"], rows))
    vs_pipe = s["auto"]["median"] / s["pipe"]["median"]
    print(f"warm sandbox / multiprocessing pipe + pickle: {vs_pipe:.2f}x, target <= "
          f"{TARGET_VS_PIPE:.1f}x: {'MET' if vs_pipe <= TARGET_VS_PIPE else 'NOT MET'}")
    median_a = s["auto"]["median"] * 1e6
    speedup = s["spawn"]["median"] / s["auto"]["median"]
    print(f"warm sandbox median {median_a:.1f} µs, target <= {TARGET_MEDIAN_US:.0f} µs: "
          f"{'MET' if median_a <= TARGET_MEDIAN_US else 'NOT MET'}")
    print(f"process per call / warm sandbox: {speedup:.0f}x, target >= "
          f"{TARGET_SPEEDUP:.0f}x: {'MET' if speedup >= TARGET_SPEEDUP else 'NOT MET'}")
    print(f"warm sandbox / in-process: {s['auto']['median'] / s['in-process']['median']:.1f}x"
          f"; outer=auto - outer=none: "
          f"{(s['auto']['median'] - s['none']['median']) * 1e6:+.1f} µs")


def memory(workers: dict[str, Any]) -> None:
    print("\n== resident memory of a warm worker (VmRSS, MiB; chain from the Popen pid)")
    rows = []
    verdicts = []
    for key, worker in workers.items():
        chain, python_rss, total = worker_memory(worker.proc.pid)
        rows.append([f"outer={key}", chain, f"{python_rss:.1f}", f"{total:.1f}"])
        verdicts.append(f"outer={key} {python_rss:.1f} MiB "
                        f"{'MET' if python_rss <= TARGET_RSS_MIB else 'NOT MET'}")
    print(table(["worker", "processes (name[pid] MiB)", "python worker", "all"], rows))
    print(f"python worker RSS, target <= {TARGET_RSS_MIB:.0f} MiB: {'; '.join(verdicts)}")


def pieces(needs: dict[str, Any], worker: Any, protocol: Any) -> None:
    """What a round trip is made of: the four codec passes and the pipe/wake-up floor."""
    import pickle

    request = {"id": 1, "op": "call", "hook": HOOK, "kwargs": {"needs": needs}}
    response = {"id": 1, "ok": True, "value": needs}
    req_frame = protocol.encode(request)
    resp_frame = protocol.encode(response)
    pickled = pickle.dumps(needs)

    def each(fn: Callable[[], Any], n: int = 500) -> float:
        return best_per_call(fn, n)

    def ping() -> None:
        with worker.lock:
            protocol.write_frame(worker.proc.stdin.fileno(), {"id": 0, "op": "ping"})
            protocol.read_frame(worker.proc.stdout.fileno(), time.monotonic() + 5)

    pings = []
    for _ in range(2000):
        start = time.perf_counter()
        ping()
        pings.append(time.perf_counter() - start)
    value = response["value"]
    # (run against an older core, the protocol had neither: the stdlib json then)
    decode = getattr(protocol, "decode", json.loads)
    check_json = getattr(protocol, "check_json", lambda v: json.dumps(v, allow_nan=False))
    rows = [
        ["parent: encode the request frame", each(lambda: protocol.encode(request))],
        ["worker: decode the request", each(lambda: decode(req_frame[4:]))],
        ["worker: check_json(the hook's value)", each(lambda: check_json(value))],
        ["worker: encode the response frame", each(lambda: protocol.encode(response))],
        ["parent: decode the response", each(lambda: decode(resp_frame[4:]))],
        ["ping round trip, median (pipes, wake-ups, loops)", summary(pings)["median"]],
        ["for reference: json.dumps(request) + encode", each(lambda: json.dumps(
            request, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())],
        ["for reference: json.loads(request frame)", each(lambda: json.loads(req_frame[4:]))],
        ["for reference: pickle.dumps(needs)", each(lambda: pickle.dumps(needs))],
        ["for reference: pickle.loads(pickled needs)",
         each(lambda: pickle.loads(pickled))],
    ]
    print("\n== pieces of a warm call, measured here in the parent (µs; best of 5, ping: "
          "median of 2000). A real call's answer carries only the keys the hook changed: "
          "its check and encoding are of those")
    print(table(["piece", "µs"], [[r[0], f"{r[1] * 1e6:.1f}"] for r in rows]))
    print(f"sum of the four codec passes (whole needs both ways): "
          f"{sum(r[1] for r in (rows[0], rows[1], rows[3], rows[4])) * 1e6:.1f} µs; "
          f"with json: {2 * (rows[6][1] + rows[7][1]) * 1e6:.1f} µs")


def cold_starts(args: argparse.Namespace, path: list[str], entry: Any, settings: Any,
                worker_cls: Any, spec_cls: Any) -> None:
    spec = spec_cls(GROUP, NAME, entry.fingerprint, (path[0],))
    samples: dict[str, list[float]] = {"auto": [], "none": []}
    for _ in range(args.cold):
        for key in samples:
            with outer_layer(key):
                start = time.perf_counter()
                worker = worker_cls(spec, settings)
                samples[key].append(time.perf_counter() - start)
            worker.close()
    print(f"\n== cold start: Worker(...) until its hello (ms; {args.cold} interleaved each)")
    rows = []
    for key, values in samples.items():
        s = summary(values)
        rows.append([f"outer={key}", f"{s['median'] * 1e3:.1f}", f"{s['min'] * 1e3:.1f}",
                     f"{max(values) * 1e3:.1f}"])
    print(table(["worker", "median", "min", "max"], rows))


if __name__ == "__main__":
    main()
