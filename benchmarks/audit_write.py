"""Benchmark: audit-log writes on SQLite and PostgreSQL, and auditing's share of a generation.

Three measurements, each on a SQLite file (WAL, beside a temporary config) and on the
PostgreSQL of `--postgres URL` (default: postgres@127.0.0.1:5432/test, in a schema of its
own, dropped afterwards; skipped with a note if unreachable):

  1. sequential appends: `Auditor.record("plugin.action", ..., subject=...)` in one
     process, one transaction each (lock, pseudonym look-up, chain head, insert) — events
     per second and the median per event;
  2. concurrent appends: 8 processes recording `--events` each at once — total events per
     second, and the chain verified afterwards (every event there, no fork);
  3. a generation's latency through the HTTP API (Flask test client, a developer token,
     `examples/needs/todo.json`, no plugin approved — the shortest generation, so the
     largest share): the time spent inside `Auditor.record` over the request's time, with
     the server's deferred writer (`dihya.auditqueue`) and, interleaved in rounds, with
     synchronous writes (one transaction per event, as before). Target: at most 5 %.

    python benchmarks/audit_write.py [--events N] [--requests R] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import ROOT, print_machine, table

WRITER = """
import sys, time
from dihya.audit import Auditor
from dihya.store import Store
auditor = Auditor(store=Store(sys.argv[1]))
auditor.record("plugin.action", "ok", subject="warm-up")
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    auditor.record("plugin.action", "ok", subject="writer-%d" % (i % 4), action="bench")
"""


@contextmanager
def backends(pg_url: str) -> Iterator[list[tuple[str, str]]]:
    import sqlalchemy as sa

    with tempfile.TemporaryDirectory() as tmp:
        out = [("SQLite (WAL)", f"sqlite:///{tmp}/dihya.sqlite3")]
        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        schema = "dihya_bench_" + secrets.token_hex(4)
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            out.append(("PostgreSQL", f"{pg_url}?options=-csearch_path%3D{schema}"))
        except Exception as exc:
            print(f"note: PostgreSQL at {pg_url} unreachable ({type(exc).__name__}); skipped")
            schema = ""
        try:
            yield out
        finally:
            if schema:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def sequential(url: str, events: int) -> list[float]:
    from dihya.audit import Auditor
    from dihya.store import Store

    auditor = Auditor(store=Store(url))
    auditor.record("plugin.action", "ok", subject="warm-up")
    times = []
    for i in range(events):
        t0 = time.perf_counter()
        auditor.record("plugin.action", "ok", subject=f"user-{i % 10}", action="bench",
                       plugin="example", duration_ms=1.0)
        times.append(time.perf_counter() - t0)
    return times


def concurrent(url: str, events: int, processes: int = 8) -> tuple[float, bool, int]:
    from dihya.auditlog import AuditLog
    from dihya.store import Store

    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(events)],
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
    result = AuditLog(Store(url)).verify()
    return processes * events / elapsed, result.ok, result.rows


def generation_share(url: str, requests: int, deferred: bool) -> tuple[list[float],
                                                                       list[float]]:
    from dihya.audit import Auditor
    from dihya.tokens import create_token
    from dihya.web import create_app

    needs = json.loads((ROOT / "examples/needs/todo.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dihya.toml"
        config.write_text(f'[plugins]\n[store]\nurl = "{url}"\n'
                          '[web]\nrate_limit = "100000/minute"\n')
        app = create_app(config)
        state = app.extensions["dihya"]
        # either write mode, whatever the server would pick for this store
        state.auditor.close()
        state.auditor = Auditor(state.config.audit_key, store=state.store, deferred=deferred)
        token = create_token(state.store, "bench-" + secrets.token_hex(3), "developer")
        spent: list[float] = []
        original: Callable[..., Any] = state.auditor.record

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t0)

        state.auditor.record = timed
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        client.post("/api/v1/generate", json={"needs": needs}, headers=headers)  # warm-up
        spent.clear()
        totals = []
        for _ in range(requests):
            t0 = time.perf_counter()
            response = client.post("/api/v1/generate", json={"needs": needs}, headers=headers)
            totals.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.get_data(as_text=True)
        state.close()
    return totals, spent


ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events per measurement "
                        "(per process for the concurrent one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print_machine()
    rows: list[list[str]] = []
    shares: list[tuple[str, str, float]] = []
    with backends(args.postgres) as stores:
        for label, url in stores:
            seq = sequential(url, args.events)
            rate, ok, count = concurrent(url, args.events // 4 or 1)
            # the server's deferred writer against synchronous writes, rounds interleaved
            sides: dict[bool, tuple[list[float], list[float]]] = {True: ([], []),
                                                                  False: ([], [])}
            for _round in range(ROUNDS):
                for deferred in (True, False):
                    totals, spent = generation_share(url, args.requests // ROUNDS or 1,
                                                     deferred)
                    sides[deferred][0].extend(totals)
                    sides[deferred][1].extend(spent)
            server_mode = "sqlite" not in url  # what `dihya serve` uses for this store
            for deferred in (True, False):
                totals, spent = sides[deferred]
                share = sum(spent) / sum(totals) * 100
                if deferred == server_mode:
                    shares.append((label, "deferred" if deferred else "synchronous", share))
                rows.append([f"{label}, {'deferred' if deferred else 'synchronous'}",
                             f"{len(seq) / sum(seq):,.0f}",
                             f"{statistics.median(seq) * 1e6:,.0f} µs", f"{rate:,.0f}",
                             f"{'ok' if ok else 'BROKEN'} ({count})",
                             f"{statistics.median(totals) * 1000:.2f} ms",
                             f"{statistics.median(spent) * 1000:.3f} ms", f"{share:.1f} %"])
    print(table(["store, audit writes", "events/s (1 proc)", "median/event",
                 "events/s (8 procs)", "chain", "generation (median)", "audit (median)",
                 "audit share"], rows))
    print("events/s and median/event: synchronous appends (the CLI's, and the server's "
          "administrative events)")
    for label, mode, share in shares:
        print(f"target: audit share <= 5 %, {label} as `dihya serve` writes ({mode}): "
              f"{share:.1f} % {'met' if share <= 5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
