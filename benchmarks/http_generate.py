"""Benchmark: requests per second of `POST /api/v1/generate`, plugins on against plugins off.

Sets up, in a temporary directory, a venv holding wheels of the core and of the two bundled
plugins (built from this checkout, installed non-editable), a config approving both
(`dihya plugins approve example markdown-docs`, in approve's default mode unless `--mode`
says otherwise) with `[web] rate_limit = "1000000/minute"` and a developer token
(`dihya tokens create`), then starts two real servers on 127.0.0.1,
each `dihya serve --workers 2` (gunicorn) on a free port, sharing that config and store:

  A. plugins on: both bundled plugins active;
  B. plugins off: the same server with `DIHYA_PLUGINS_DISABLE=example,markdown-docs`
     (every approved plugin switched off; the report lists them as skipped);
  C. the peer: a trivial Flask endpoint under gunicorn (`gunicorn --workers 2`, sync
     workers, the same Flask from the same venv) at the same path, which parses the JSON
     body and answers a small JSON object: what any Flask service pays per request.

A client of T threads, each with its own `http.client` connection (gunicorn's sync workers
close it after each response; the client reconnects), posts `examples/needs/todo.json`
for rounds of at most `--seconds` and `--requests`, interleaved A, B, B, A, A, B... after
a warm-up round per side (`--warmup` seconds); every answer other than a 200 counts as an
error, and one request per side first checks which plugins ran. It prints requests per
second, median and p99 latency and the servers' CPU per request (every gunicorn process,
from /proc) per side, and the ratios A/B (target >= 0.8) and B/C (target >= 0.35). The
servers are always stopped. `--profile` adds, per side, an in-process run of the request path
(Flask test client) with each hook's median time and a cProfile.

`--compare-core DIR` (another checkout's `core` directory, e.g. `main`'s) adds side D: B
served by that core (`PYTHONPATH=DIR`, the same venv; a config and store of its own, made
by that core, as the two cores' schemas may differ), and side E: A
served by that checkout, from a venv of its own (wheels of DIR's checkout: the core, from
`DIR/../pyproject.toml`, and the bundled plugins of `DIR/../plugins` when it has them,
else this checkout's), with its own config, approval and token: its sandbox workers run
that core and those plugins too (a worker's import path never holds `/tmp`, so
`PYTHONPATH` alone would give them this venv's core). Both interleaved with the others,
so before and after, on and off, are measured in one run (E/D: the compared ratio).

    python benchmarks/http_generate.py [--rounds 4] [--seconds 5] [--requests 5000]
                                       [--threads 4] [--warmup 3]
                                       [--mode sandbox|in-process]
                                       [--profile] [--workdir DIR] [--compare-core DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    build_core_wheel,
    clean_env,
    core_dependencies,
    make_venv,
    percentile,
    print_machine,
    server_not_ready,
    stop_server,
    table,
    tree_cpu_seconds,
)

TARGET = 0.8
TARGET_VS_FLASK = 0.35
FLASK_APP = """\
from flask import Flask, request

app = Flask(__name__)


@app.post("/api/v1/generate")
def generate():
    needs = request.get_json()["needs"]
    return {"project": needs["project"], "files": 0}


@app.get("/readyz")
def ready():
    return {"plugins_active": 0}
"""
PLUGINS = ("example", "markdown-docs")
PLUGIN_DIRS = ("plugins/example-plugin", "plugins/markdown-docs-plugin")
NEEDS_FILE = ROOT / "examples" / "needs" / "todo.json"
CONFIG = """\
# benchmark config written by benchmarks/http_generate.py
[plugins]
hook_timeout_s = 2.0

[web]
rate_limit = "1000000/minute"
"""

# In-process profile of the request path (Flask test client, no HTTP, no gunicorn): the
# view with its decorators (auth, rate limit), the pipeline and the JSON response, for one
# side. argv: config, token, needs file, requests.
PROFILE = """\
import cProfile, json, pstats, sys, time
from dihya.web import create_app
from dihya.web.serve import configure_logging
configure_logging()  # audit lines on stderr, as under gunicorn
config, token, needs_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
body = json.dumps({"needs": json.load(open(needs_file))})
client = create_app(config).test_client()
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def once():
    response = client.post("/api/v1/generate", data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response
report = once().get_json()["report"]
ran = sorted({p["name"] for p in report["plugins"] if p["status"] == "ok"})
for _ in range(50):
    once()
times, hooks = [], {}
for _ in range(count):
    t0 = time.perf_counter(); response = once(); times.append(time.perf_counter() - t0)
    for p in response.get_json()["report"]["plugins"]:
        hooks.setdefault(f"{p['name']} {p['hook']}", []).append(p["ms"])
profiler = cProfile.Profile()
profiler.enable()
for _ in range(count):
    once()
profiler.disable()
times.sort()
print(f"plugins that ran: {ran or 'none'}; in-process request, no profiler: median "
      f"{times[len(times) // 2] * 1000:.2f} ms over {count}")
for name, values in hooks.items():
    values.sort()
    print(f"  hook {name}: median {values[len(values) // 2]:.2f} ms (the pipeline's timing: "
          "copy + call + check)")
sys.stdout.flush()
stats = pstats.Stats(profiler, stream=sys.stdout)
stats.sort_stats("cumulative").print_stats(45)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dihya(bindir: Path, config: Path, *args: str, env: dict[str, str],
          cwd: Path) -> str:
    out = subprocess.run([str(bindir / "dihya"), "--config", str(config), *args], env=env,
                         cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"dihya {' '.join(args)}: exit {out.returncode}\n{out.stdout}"
                         f"{out.stderr}")
    return out.stdout


def setup_store(bindir: Path, work: Path, mode: str | None, env: dict[str, str]
                ) -> tuple[Path, str, str]:
    """`work`'s config (its store beside it), both plugins approved, a developer token:
    (config, token, approve's output), made by the core `env` runs."""
    work.mkdir()
    config = work / "dihya.toml"
    config.write_text(CONFIG)
    approve = ["plugins", "approve", *PLUGINS, *(["--mode", mode] if mode else [])]
    approved = dihya(bindir, config, *approve, env=env, cwd=work)
    token = dihya(bindir, config, "tokens", "create", "--role", "developer", "--name", "bench",
                  env=env, cwd=work).strip().splitlines()[-1]
    return config, token, approved


def setup(tmp: Path, mode: str | None, compare_core: Path | None = None,
          root: Path = ROOT) -> tuple[Path, Path, str, Path]:
    """Build the wheels, the venv, the config and a token; return (bin, config, token,
    work dir). With `compare_core`, the venv also gets what that core depends on (its
    checkout's `pyproject.toml`), as the two cores' dependencies may differ, and that
    core gets a config and store of its own in `work-compare` (made by it: the two cores'
    store schemas may differ, and a core refuses a store newer than it). `root`: the
    checkout the core's wheel is built from (its bundled plugins too, when it has them)."""
    wheels = tmp / "wheels"
    wheels.mkdir()
    t0 = time.perf_counter()
    core = build_core_wheel(wheels, root)
    plugins = []
    for directory in PLUGIN_DIRS:
        before = set(wheels.glob("*.whl"))
        source = root / directory if (root / directory).is_dir() else ROOT / directory
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "-w", str(wheels),
                        str(source)], check=True)
        (new,) = set(wheels.glob("*.whl")) - before
        plugins.append(new)
    t1 = time.perf_counter()
    python = make_venv(tmp / "venv", [str(core), *map(str, plugins),
                                      *(core_dependencies(compare_core) if compare_core
                                        else [])])
    t2 = time.perf_counter()
    bindir = python.parent
    work = tmp / "work"
    config, token, approved = setup_store(bindir, work, mode, clean_env())
    if compare_core is not None:
        _config, token_d, _approved = setup_store(
            bindir, tmp / "work-compare", mode, clean_env(PYTHONPATH=str(compare_core.resolve())))
        (tmp / "work-compare" / "token").write_text(token_d)
    t3 = time.perf_counter()
    print(f"setup: wheels {t1 - t0:.1f} s, venv + pip install {t2 - t1:.1f} s, approve + "
          f"token {t3 - t2:.1f} s")
    for line in approved.strip().splitlines():
        print(f"  {line[:110]}")
    versions = subprocess.run(
        [str(python), "-c", "from importlib import metadata as m; print(', '.join("
         "f'{d} {m.version(d)}' for d in ('dihya-core', 'dihya-plugin-example', "
         "'dihya-plugin-markdown-docs', 'flask', 'gunicorn')))"],
        check=True, capture_output=True, text=True).stdout.strip()
    print(f"  installed: {versions}")
    return bindir, config, token, work


class Server:
    """One `dihya serve --workers 2` on a free port of 127.0.0.1, in its own process group
    (the arbiter and its workers), logging to a file; or, with `flask=True`, gunicorn with
    2 workers serving the trivial Flask app (FLASK_APP)."""

    def __init__(self, label: str, bindir: Path, config: Path, work: Path,
                 env: dict[str, str], flask: bool = False) -> None:
        self.label = label
        self.port = free_port()
        self.log_path = work / f"server-{label}.log"
        self.log = self.log_path.open("w")
        if flask:
            (work / "trivial_app.py").write_text(FLASK_APP)
            argv = [str(bindir / "gunicorn"), "--workers", "2", "--bind",
                    f"127.0.0.1:{self.port}", "--chdir", str(work), "trivial_app:app"]
        else:
            argv = [str(bindir / "dihya"), "--config", str(config), "serve", "--host",
                    "127.0.0.1", "--port", str(self.port), "--workers", "2"]
        self.proc = subprocess.Popen(argv, cwd=work, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body: dict[str, Any] = json.loads(response.read())
                    return body
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise server_not_ready(self.label, self.log_path)

    def stop(self) -> None:
        stop_server(self.proc, self.log)


def post(conn: http.client.HTTPConnection, body: bytes,
         headers: dict[str, str]) -> tuple[int, bytes]:
    conn.request("POST", "/api/v1/generate", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def check_side(port: int, body: bytes, headers: dict[str, str]) -> list[str]:
    """One request; the names of the plugins that ran (fails unless it is a 200; none for
    the trivial Flask app)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, data = post(conn, body, headers)
    finally:
        conn.close()
    if status != 200:
        raise SystemExit(f"POST /api/v1/generate on port {port}: {status} {data[:500]!r}")
    answer = json.loads(data)
    if "report" not in answer:
        return []
    report = answer["report"]
    return sorted({p["name"] for p in report["plugins"] if p["status"] == "ok"})


def run_round(port: int, body: bytes, headers: dict[str, str], threads: int,
              seconds: float, max_requests: int, pid: int | None = None) -> dict[str, Any]:
    """`threads` clients posting until `seconds` passed or `max_requests` were sent; with
    `pid`, also the CPU seconds that server's processes used meanwhile."""
    cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
    lock = threading.Lock()
    sent = 0
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds

    def worker(mine: list[float]) -> None:
        nonlocal sent
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    if sent >= max_requests or time.perf_counter() >= deadline:
                        return
                    sent += 1
                t0 = time.perf_counter()
                try:
                    status, data = post(conn, body, headers)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"HTTP {status}: {data[:200]!r}")
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(latencies[i],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = tree_cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    samples = [x for chunk in latencies for x in chunk]
    return {"ok": len(samples) - sum(e.startswith("HTTP") for e in errors),
            "errors": errors, "elapsed": elapsed, "latencies": samples, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per side")
    parser.add_argument("--seconds", type=float, default=5.0, help="longest round")
    parser.add_argument("--requests", type=int, default=5000, help="most requests per round")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of warm-up per side before the measured rounds")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client connections")
    parser.add_argument("--mode", choices=("sandbox", "in-process"), default=None,
                        help="`plugins approve --mode` (default: none given, i.e. approve's "
                        "default, sandbox)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of the request path (in-process) per side")
    parser.add_argument("--compare-core", type=Path, default=None,
                        help="another checkout's core directory: side D, B served by it")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to create the temporary directory (default: the system's)")
    args = parser.parse_args()
    print_machine()
    tmp = Path(tempfile.mkdtemp(prefix="dihya-bench-http-", dir=args.workdir))
    try:
        bench(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(tmp: Path, args: argparse.Namespace) -> None:
    bindir, config, token, work = setup(tmp, args.mode, args.compare_core)
    body = json.dumps({"needs": json.loads(NEEDS_FILE.read_text("utf-8"))}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sides = {"A": clean_env(), "B": clean_env(DIHYA_PLUGINS_DISABLE=",".join(PLUGINS)),
             "C": clean_env()}
    where = {label: (bindir, config, work) for label in sides}
    tokens = {label: headers for label in sides}
    if args.compare_core:
        sides["D"] = clean_env(DIHYA_PLUGINS_DISABLE=",".join(PLUGINS),
                               PYTHONPATH=str(args.compare_core.resolve()))
        work_d = tmp / "work-compare"
        token_d = (work_d / "token").read_text()
        where["D"] = (bindir, work_d / "dihya.toml", work_d)
        tokens["D"] = {**headers, "Authorization": f"Bearer {token_d}"}
        (tmp / "E").mkdir()
        e_bin, e_config, e_token, e_work = setup(tmp / "E", args.mode,
                                                 root=args.compare_core.resolve().parent)
        sides["E"], where["E"] = clean_env(), (e_bin, e_config, e_work)
        tokens["E"] = {**headers, "Authorization": f"Bearer {e_token}"}
    servers: dict[str, Server] = {}
    try:
        for label, env in sides.items():
            servers[label] = Server(label, *where[label], env, flask=label == "C")
        ready = {label: server.wait_ready() for label, server in servers.items()}
        ran = {label: check_side(server.port, body, tokens[label])
               for label, server in servers.items()}
        if (ran["A"] != sorted(PLUGINS) or ran["B"] or ran.get("D")
                or ran.get("E", sorted(PLUGINS)) != sorted(PLUGINS)):
            raise SystemExit(f"unexpected plugins: {ran}")
        print(f"servers: A on :{servers['A'].port} ({ready['A']['plugins_active']} plugins "
              f"active, ran {', '.join(ran['A'])}), B on :{servers['B'].port} "
              f"({ready['B']['plugins_active']} active), C (trivial Flask) on "
              f":{servers['C'].port}")

        results: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
        for label in servers:  # warm-up: imports, caches, first-call costs, both workers
            run_round(servers[label].port, body, tokens[label], args.threads, args.warmup,
                      args.requests)
        orders: tuple[tuple[str, ...], ...] = (
            ("A", "B", "C"), ("C", "B", "A"), ("B", "C", "A"), ("A", "C", "B"))
        if "E" in servers:
            orders = (("A", "B", "E", "D", "C"), ("D", "E", "C", "B", "A"),
                      ("B", "A", "D", "C", "E"), ("E", "D", "A", "C", "B"),
                      ("C", "E", "B", "A", "D"))
        for index in range(args.rounds):
            for label in orders[index % len(orders)]:
                outcome = run_round(servers[label].port, body, tokens[label], args.threads,
                                    args.seconds, args.requests, servers[label].proc.pid)
                results[label].append(outcome)
                rps = outcome["ok"] / outcome["elapsed"]
                print(f"  round {index + 1} {label}: {outcome['ok']} ok in "
                      f"{outcome['elapsed']:.2f} s = {rps:.1f} rps"
                      + (f", {len(outcome['errors'])} errors" if outcome["errors"] else ""))
    finally:
        for server in servers.values():
            server.stop()
    report(args, results)
    if args.profile:
        profile(bindir, config, token, work)


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    names = {"A": "A  plugins on (example + markdown-docs)",
             "B": "B  plugins off (DIHYA_PLUGINS_DISABLE)",
             "C": "C  peer: trivial Flask endpoint, gunicorn",
             "D": "D  plugins off, --compare-core",
             "E": "E  plugins on, --compare-core (its venv)"}
    rows = []
    rps: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for label in results:
        rounds = results[label]
        ok = sum(r["ok"] for r in rounds)
        elapsed = sum(r["elapsed"] for r in rounds)
        rps[label] = ok / elapsed
        per_round = [r["ok"] / r["elapsed"] for r in rounds]
        lat = [x * 1000 for r in rounds for x in r["latencies"]]
        errors = sum(len(r["errors"]) for r in rounds)
        cpu[label] = sum(r["cpu"] for r in rounds) / max(1, ok)
        rows.append([names[label], f"{rps[label]:.1f}", f"{statistics.median(per_round):.1f}",
                     f"{min(per_round):.1f}-{max(per_round):.1f}",
                     f"{statistics.median(lat):.2f}", f"{percentile(lat, 99):.2f}",
                     f"{cpu[label] * 1000:.2f}", str(ok), str(errors)])
    print(f"\n== POST /api/v1/generate (examples/needs/todo.json), plugins approved "
          f"{args.mode or 'with the default mode'}, gunicorn 2 workers each, "
          f"{args.threads} client threads, {args.rounds} interleaved rounds per side of at "
          f"most {args.seconds:g} s / {args.requests} requests")
    print(table(["side", "rps", "rps/round med", "range", "median ms", "p99 ms",
                 "server CPU ms/req", "requests", "errors"], rows))
    pairs = [("A", "B", TARGET, "plugins on / off"),
             ("B", "C", TARGET_VS_FLASK, "plugins off / trivial Flask")]
    if "D" in results:
        pairs.append(("D", "C", TARGET_VS_FLASK, "plugins off, compared core / trivial Flask"))
    if "E" in results:
        pairs.append(("E", "D", TARGET, "plugins on / off, compared core"))
    for (a, b, target, what) in pairs:
        ratio = rps[a] / rps[b]
        status = ("MET" if ratio >= target else "NOT MET")
        print(f"ratio {a}/{b} (rps, {what}): {ratio:.2f}   target >= {target:.2f}: "
              f"{status}; server CPU per request {b}/{a}: {cpu[b] / cpu[a]:.2f}")
    for rounds in results.values():
        for r in rounds:
            for error in r["errors"][:3]:
                print(f"  error: {error}")


def profile(bindir: Path, config: Path, token: str, work: Path) -> None:
    for label, env in (("A plugins on", clean_env()),
                       ("B plugins off", clean_env(DIHYA_PLUGINS_DISABLE=",".join(PLUGINS)))):
        out = subprocess.run([str(bindir / "python"), "-c", PROFILE, str(config), token,
                              str(NEEDS_FILE), "300"],
                             env=env, cwd=work, capture_output=True, text=True)
        print(f"\n== profile, {label} (in-process, Flask test client, 300 requests)")
        print(out.stdout[:12000] if out.returncode == 0 else out.stderr[-3000:])


if __name__ == "__main__":
    main()
