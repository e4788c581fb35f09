"""Benchmark: the cost of read-your-writes kill switches, one state-version read per request.

Every generation (and plugin listing or action) reads the store's state version once
(`DihyaState.current`) so that a switch answered by another worker or node is never
missed. This script measures that read alone, and a whole HTTP generation through the
Flask app (test client, no network, plugins off: the cheapest generation, so the largest
share) with the check and without it (`current` replaced by the plain `snapshot`),
interleaved, on SQLite and — when it is reachable — PostgreSQL (127.0.0.1:5432, database
`test`, or DIHYA_TEST_POSTGRES_URL). Target: the check costs at most 3 % of a generation.

    python benchmarks/state_check.py [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ROOT, print_machine, summary, table, verdict_at_most

sys.path.insert(0, str(ROOT / "core"))

TODO = json.loads((ROOT / "examples" / "needs" / "todo.json").read_text())
POSTGRES = os.environ.get("DIHYA_TEST_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_schema() -> tuple[Any, str] | None:
    """(an admin engine, a fresh schema) on the test PostgreSQL, or None if unreachable."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    schema = "dihya_bench_" + secrets.token_hex(6)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception:
        engine.dispose()
        return None
    return engine, schema


def _app(root: Path, store_url: str) -> tuple[Any, dict[str, str]]:
    from dihya.store.tokens import create_token
    from dihya.web import create_app

    config = root / "dihya.toml"
    config.write_text(f'[plugins]\nallow = []\n\n[store]\nurl = "{store_url}"\n\n'
                      '[web]\nrate_limit = "1000000/minute"\n')
    app = create_app(config)
    token = create_token(app.extensions["dihya"].store, f"bench-{uuid.uuid4().hex[:6]}",
                         "developer")
    return app, {"Authorization": f"Bearer {token}"}


def measure(label: str, store_url: str, repeat: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory(prefix="dihya-bench-state-") as tmp:
        app, headers = _app(Path(tmp), store_url)
        state = app.extensions["dihya"]
        client = app.test_client()
        checked = state.current
        unchecked = lambda request_id=None: state.snapshot()  # noqa: E731
        reads = []
        for _ in range(max(200, repeat)):
            start = time.perf_counter()
            state.store.current_state_version()
            reads.append((time.perf_counter() - start) * 1e6)
        with_check: list[float] = []
        without: list[float] = []
        for i in range(repeat * 2):
            state.current = checked if i % 2 == 0 else unchecked
            start = time.perf_counter()
            answer = client.post("/api/v1/generate", json={"needs": TODO}, headers=headers)
            elapsed = (time.perf_counter() - start) * 1e6
            assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
            (with_check if i % 2 == 0 else without).append(elapsed)
        state.current = checked
        state.close()
    read, on, off = summary(reads), summary(with_check), summary(without)
    share = read["median"] / on["median"] * 100
    return [[label, f"{read['median']:.0f}", f"{on['median']:.0f}", f"{off['median']:.0f}",
             f"{(on['median'] - off['median']) / off['median'] * 100:+.1f}",
             f"{share:.2f}", verdict_at_most(share, 3.0, "%")]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="generations per side")
    args = parser.parse_args()
    print_machine()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dihya-bench-sqlite-") as tmp:
        rows += measure("SQLite", f"sqlite:///{tmp}/dihya.sqlite3", args.repeat)
    found = _postgres_schema()
    if found is not None:
        import sqlalchemy as sa

        engine, schema = found
        sep = "&" if "?" in POSTGRES else "?"
        try:
            rows += measure("PostgreSQL", f"{POSTGRES}{sep}options=-csearch_path%3D{schema}",
                            args.repeat)
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
    else:
        rows.append(["PostgreSQL", "unreachable", "-", "-", "-", "-", "-"])
    print(f"\n== one HTTP generation (test client, plugins off, {args.repeat} interleaved per "
          "side), µs medians")
    print(table(["store", "version read", "generate, checked", "generate, unchecked",
                 "difference %", "read / generate %", "target <= 3 %"], rows))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
