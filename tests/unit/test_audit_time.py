"""`dihya.audit.iso_time` writes exactly what `datetime` writes (every log line's `time`)."""

from __future__ import annotations

import datetime as dt
import math
import random

from dihya.audit import iso_time


def _reference(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def test_iso_time_is_datetime_isoformat() -> None:
    rng = random.Random(16)
    values = [0.0, 0.0005, 0.9995, 0.9999995, 0.9999994999, 1.0, 59.9999999, 1e-7, 5e-7,
              1.5e-6, 2.5e-6, 1796234861.677154, 1796234861.9999995, 1796234861.0004995,
              253402300798.9994, 86399.99951, 951782399.9999996]  # 2000-02-28 23:59:59
    values += [rng.uniform(0, 4e9) for _ in range(20000)]
    values += [round(rng.uniform(1.7e9, 1.9e9), 6) for _ in range(20000)]  # audit `at`
    values += [math.floor(v) + k / 1e6 for v in values[:200] for k in (0, 499, 500, 999999)]
    values += [math.nextafter(v, math.inf) for v in values[:2000]]
    for ts in values:
        assert iso_time(ts) == _reference(ts), ts
    for ts in (-1.5, -0.0000004, 1, 10**10, 2.5e11):  # outside the fast path's range: the same
        assert iso_time(ts) == _reference(ts), ts
