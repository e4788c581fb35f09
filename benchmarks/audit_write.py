"""Benchmark: durable audit writes, and their share of a generation's latency.

Every answer now waits for its audit event's commit (group commit, `dihya/auditqueue.py`);
this measures what that costs, on a SQLite file and on the PostgreSQL of `--postgres URL`
(default: postgres@127.0.0.1:5432/test, in a schema of its own, dropped afterwards;
skipped with a note if unreachable), each with `[store] synchronous = "full"` (the
default: a commit survives power loss) and `"normal"` (any process crash):

  1. sequential appends: `Auditor.record(...)` in one process, one commit each — events
     per second and the median per event;
  2. concurrent appends: 8 processes recording `--events / 4` each at once — events per
     second, and the chain verified afterwards (every event there, no fork);
  3. a generation's latency over HTTP, side by side: two real servers
     (`_audit_server.py`: `DihyaServer` with `dihya serve`'s options, `--workers 2`) on
     the same config and store, one auditing as `dihya serve` does, one with auditing
     replaced by a no-op; clients post `examples/needs/todo.json` (no plugin approved:
     the shortest generation, so the largest share) for `--rounds` interleaved rounds of
     `--seconds` per side, each request on a new connection. Two loads: 1 client
     (sync workers, one request at a time: every event is its own commit) and
     `--clients` clients against `--threads` threads per worker (concurrent requests of a
     worker share commits). The audit share is (median with audit - median without) /
     median with audit; target <= 5 %. Also the audit's share of the server's CPU: the
     CPU seconds (user + system, every gunicorn process, writer threads included, from
     /proc) per request with audit minus without, over with. The machine's load average is
     printed per row.

  With `--compare-core DIR` (a checkout's `core` directory, e.g. `main`'s), each HTTP row
  is measured for this core and for that one (servers run with `PYTHONPATH=DIR`; on
  SQLite with a store file of its own, made by that core, as the schemas may differ), the
  four servers' rounds interleaved: before and after side by side in one run, each
  against its own server without audit. `--no-appends` skips parts 1 and 2 (in-process:
  this core only); `--single-client` skips the concurrent HTTP load.

    python benchmarks/audit_write.py [--events N] [--seconds S] [--rounds R]
                                     [--clients C] [--threads T] [--postgres URL]
                                     [--only sqlite|postgres] [--compare-core DIR]
                                     [--no-appends] [--single-client]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import ROOT, percentile, print_machine, table, tree_cpu_seconds

HERE = Path(__file__).resolve().parent
NEEDS = (ROOT / "examples" / "needs" / "todo.json").read_text()
TARGET_SHARE = 5.0

WRITER = """
import sys, time
from dihya.audit import Auditor
from dihya.store import Store
auditor = Auditor(store=Store(sys.argv[1], synchronous=sys.argv[3]))
auditor.record("plugin.action", "ok", subject="warm-up")
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    auditor.record("plugin.action", "ok", subject="writer-%d" % (i % 4), action="bench")
"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


@contextmanager
def stores(pg_url: str, only: str | None) -> Iterator[list[tuple[str, str]]]:
    import sqlalchemy as sa

    with tempfile.TemporaryDirectory() as tmp:
        out = []
        if only in (None, "sqlite"):
            out.append(("SQLite", f"sqlite:///{tmp}/dihya.sqlite3"))
        schema = ""
        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        if only in (None, "postgres"):
            schema = "dihya_bench_" + secrets.token_hex(4)
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                out.append(("PostgreSQL", f"{pg_url}?options=-csearch_path%3D{schema}"))
            except Exception as exc:
                print(f"note: PostgreSQL at {pg_url} unreachable ({type(exc).__name__}); "
                      "skipped")
                schema = ""
        try:
            yield out
        finally:
            if schema:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def sequential(url: str, sync: str, events: int) -> list[float]:
    from dihya.audit import Auditor
    from dihya.store import Store

    store = Store(url, create=True, synchronous=sync)
    auditor = Auditor(store=store)
    auditor.record("plugin.action", "ok", subject="warm-up")
    times = []
    for i in range(events):
        t0 = time.perf_counter()
        auditor.record("plugin.action", "ok", subject=f"user-{i % 10}", action="bench",
                       plugin="example", duration_ms=1.0)
        times.append(time.perf_counter() - t0)
    store.engine.dispose()
    return times


def concurrent(url: str, sync: str, events: int, processes: int = 8) -> tuple[float, bool, int]:
    from dihya.audit.chain import AuditLog
    from dihya.store import Store

    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(events), sync],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.wait()
    elapsed = time.perf_counter() - t0
    store = Store(url)
    result = AuditLog(store).verify()
    store.engine.dispose()
    return processes * events / elapsed, result.ok, result.rows


# -- generation latency over HTTP, with and without audit ---------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Side:
    """One benchmark server: with or without audit."""

    def __init__(self, config: Path, audit: bool, threads: int, log: Path,
                 core: str | None = None) -> None:
        self.audit = audit
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DIHYA_") and k != "PYTHONPATH"}
        if core is not None:
            env["PYTHONPATH"] = core
        self.port = free_port()
        self.log_path = log
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_audit_server.py"), str(config), str(self.port), "2",
             str(threads), "audit" if audit else "no-audit"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("a benchmark server did not start:\n" + log.read_text()[-3000:])

    def stop(self) -> tuple[int, int]:
        """Stop; (audit transactions, events) the workers reported."""
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()
        commits = events = 0
        for m in re.finditer(r"audit-commits (\d+) (\d+)", self.log_path.read_text()):
            commits += int(m.group(1))
            events += int(m.group(2))
        return commits, events


def run_round(port: int, token: str, clients: int, seconds: float) -> tuple[list[float], int]:
    body = json.dumps({"needs": json.loads(NEEDS)}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0]

    def client(mine: list[float]) -> None:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/api/v1/generate", body, headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                errors[0] += 1

    threads = [threading.Thread(target=client, args=(lat,)) for lat in latencies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for lat in latencies for x in lat], errors[0]


def compare_store(core: str, url: str, sync: str) -> str:
    """Create the store at `url` with the core at `core` and a developer token in it."""
    code = ("import secrets, sys; from dihya.store import Store; "
            "from dihya.store.tokens import create_token; "
            "s = Store(sys.argv[1], create=True, synchronous=sys.argv[2]); "
            "print(create_token(s, 'bench-' + secrets.token_hex(3), 'developer'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
    env["PYTHONPATH"] = core
    out = subprocess.run([sys.executable, "-c", code, url, sync], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def latency_rows(label: str, url: str, sync: str, args: argparse.Namespace,
                 work: Path) -> list[list[str]]:
    from dihya.store import Store
    from dihya.store.tokens import create_token

    def write_config(name: str, store_url: str) -> Path:
        config = work / f"dihya-{label}-{sync}{name}.toml".replace(" ", "")
        config.write_text(f'[plugins]\nallow = []\n[store]\nurl = {json.dumps(store_url)}\n'
                          f'synchronous = "{sync}"\n[web]\nrate_limit = "100000000/minute"\n')
        return config

    store = Store(url, create=True, synchronous=sync)
    token = create_token(store, "bench-" + secrets.token_hex(3), "developer")
    store.engine.dispose()
    rows = []
    cores: list[tuple[str, str | None]] = [("", None)]
    configs = {"": write_config("", url)}
    tokens = {"": token}
    if args.compare_core:
        cores = [("this core", None), ("compare core", str(args.compare_core))]
        configs["this core"] = configs[""]
        tokens["this core"] = token
        configs["compare core"], tokens["compare core"] = configs[""], token
        if url.startswith("sqlite"):
            # a SQLite store of its own, made by that core: the two cores' schema
            # versions may differ, and a core refuses a store newer than it
            other = url.replace(".sqlite3", "-compare.sqlite3")
            configs["compare core"] = write_config("-compare", other)
            tokens["compare core"] = compare_store(str(args.compare_core), other, sync)
    loads = [(1, 1)] if args.single_client else [(1, 1), (args.clients, args.threads)]
    for clients, threads in loads:
        keys = [(name, audit) for name, _ in cores for audit in (True, False)]
        where = dict(cores)
        sides = {}
        try:
            for key in keys:
                name, audit = key
                sides[key] = Side(configs[name], audit, threads,
                                  work / f"{label}-{sync}-{audit}-{len(sides)}.log", where[name])
            samples: dict[Any, list[float]] = {key: [] for key in keys}
            cpu = dict.fromkeys(keys, 0.0)  # the server's CPU seconds in measured rounds
            errors = dict.fromkeys(keys, 0)
            loads_seen = [load()]
            for key in keys:  # warm-up, unrecorded
                run_round(sides[key].port, tokens[key[0]], clients, 1.0)
            for r in range(args.rounds):
                order = keys[r % len(keys):] + keys[:r % len(keys)]
                for key in order:
                    before = tree_cpu_seconds(sides[key].proc.pid)
                    got, failed = run_round(sides[key].port, tokens[key[0]], clients,
                                            args.seconds)
                    cpu[key] += tree_cpu_seconds(sides[key].proc.pid) - before
                    samples[key] += got
                    errors[key] += failed
            loads_seen.append(load())
        finally:
            counts = {key: side.stop() for key, side in sides.items()}
        for name, _ in cores:
            on, off = (name, True), (name, False)
            with_audit = statistics.median(samples[on])
            without = statistics.median(samples[off])
            share = (with_audit - without) / with_audit * 100
            cpu_with = cpu[on] / max(1, len(samples[on]))
            cpu_without = cpu[off] / max(1, len(samples[off]))
            cpu_share = (cpu_with - cpu_without) / cpu_with * 100 if cpu_with else float("nan")
            commits, events = counts[on]
            per_commit = f"{events / commits:.2f}" if commits else "-"
            total_s = args.rounds * args.seconds
            rows.append([
                f"{label}, synchronous={sync}" + (f" ({name})" if name else ""),
                f"{clients}/{threads}",
                f"{with_audit * 1000:.2f} / {percentile(samples[on], 90) * 1000:.2f}",
                f"{without * 1000:.2f} / {percentile(samples[off], 90) * 1000:.2f}",
                f"{len(samples[on]) / total_s:.0f} / {len(samples[off]) / total_s:.0f}",
                f"{share:.1f} %", f"{cpu_with * 1000:.2f} / {cpu_without * 1000:.2f}",
                f"{cpu_share:.1f} %", per_commit, f"{errors[on]}/{errors[off]}",
                " -> ".join(loads_seen)])
            print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="sequential appends; "
                        "a quarter of that per process for the concurrent ones")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    parser.add_argument("--compare-core", type=Path, default=None,
                        help="another checkout's core directory, measured side by side")
    parser.add_argument("--no-appends", action="store_true",
                        help="skip the in-process sequential and concurrent appends")
    parser.add_argument("--single-client", action="store_true",
                        help="only the one-client HTTP load")
    args = parser.parse_args()
    print_machine()
    print(f"load average (1 min/5 min) at start: {load()}\n", flush=True)
    append_rows: list[list[str]] = []
    http_rows: list[list[str]] = []
    with stores(args.postgres, args.only) as found, tempfile.TemporaryDirectory() as tmp:
        for label, base_url in found:
            for sync in ("full", "normal"):
                # a store per setting: the SQLite file's pragma is per connection, the
                # PostgreSQL setting per transaction; separate files keep counts apart
                url = (base_url.replace("dihya.sqlite3", f"dihya-{sync}.sqlite3")
                       if base_url.startswith("sqlite") else base_url)
                if args.no_appends:
                    http_rows += latency_rows(label, url, sync, args, Path(tmp))
                    continue
                seq = sequential(url, sync, args.events)
                rate, ok, count = concurrent(url, sync, args.events // 4 or 1)
                append_rows.append([f"{label}, synchronous={sync}",
                                    f"{len(seq) / sum(seq):,.0f}",
                                    f"{statistics.median(seq) * 1e6:,.0f} µs",
                                    f"{rate:,.0f}", f"{'ok' if ok else 'BROKEN'} ({count})",
                                    load()])
                print(f"  {append_rows[-1]}", flush=True)
                http_rows += latency_rows(label, url, sync, args, Path(tmp))
    if append_rows:
        print()
        print(table(["store", "events/s (1 proc)", "median/event", "events/s (8 procs)",
                     "chain", "load"], append_rows))
    print()
    print(table(["store", "clients/threads", "with audit ms (median / p90)",
                 "without ms (median / p90)", "req/s with / without", "audit share",
                 "server CPU ms/req with / without", "audit CPU share", "events/commit",
                 "errors", "load before -> after"], http_rows))
    print()
    for row in http_rows:
        share = float(row[5].split()[0])
        cpu_share = float(row[7].split()[0])
        print(f"target: audit share <= {TARGET_SHARE:g} %, {row[0]}, {row[1]} "
              f"clients/threads: latency {share:.1f} % "
              f"{'met' if share <= TARGET_SHARE else 'NOT MET'}; server CPU {cpu_share:.1f} % "
              f"{'met' if cpu_share <= TARGET_SHARE else 'NOT MET'}")


if __name__ == "__main__":
    main()
