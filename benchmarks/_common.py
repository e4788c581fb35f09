"""Shared helpers of the benchmark scripts: machine facts, statistics, tables, venvs.

Standard library only, so a script can start on any Python and set up its own venv.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
# tests/support/wheels.py builds the synthetic plugin wheels (standard library only).
sys.path.insert(0, str(ROOT / "tests"))

# Source text for the probe scripts that run in a benchmark's venv (where this module is not
# importable): a dict `phases` and `timed(key, fn)`, which wraps `fn` so that each call adds
# its seconds to `phases[key]`. The script must import `time` first.
PHASE_TIMER = """\
phases = {}

def timed(key, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[key] = phases.get(key, 0.0) + time.perf_counter() - start
    return wrapper
"""


def machine() -> list[tuple[str, str]]:
    """CPU model, cores and Python, as (label, value) rows."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        ("cpu", model),
        ("cores", f"{usable} usable ({os.cpu_count()} online)"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("os", f"{platform.system()} {platform.release()}"),
    ]


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    data = sorted(samples)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "min": min(samples),
        "n": float(len(samples)),
    }


def best_per_call(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of `fn`: the best of 5 loops of `n` calls (the least disturbed)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def print_machine() -> None:
    print(table(["machine", ""], machine()))
    print()


def verdict(ratio: float, target: float) -> str:
    if ratio <= target:
        return f"MET (ratio {ratio:.2f}x <= target {target:.2f}x)"
    return (f"NOT MET (ratio {ratio:.2f}x > target {target:.2f}x, "
            f"{(ratio / target - 1) * 100:.0f}% over)")


def make_venv(where: Path, *install: Sequence[str]) -> Path:
    """A fresh venv at `where`; each `install` is one `pip install` argument list."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    for args in install:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "--no-warn-script-location", *args],
                       check=True)
    return python


def build_core_wheel(outdir: Path, root: Path = ROOT) -> Path:
    """A wheel of dihya-core built from this checkout, or `root` (the same as `pip install .`)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(outdir), str(root)], check=True)
    return next(outdir.glob("dihya_core-*.whl"))


def core_dependencies(core_dir: Path) -> list[str]:
    """The runtime requirements of the checkout whose `core` directory is `core_dir` (its
    `pyproject.toml`), for a venv that also serves that core with `PYTHONPATH`."""
    import tomllib

    project = tomllib.loads((core_dir.resolve().parent / "pyproject.toml").read_text("utf-8"))
    return list(project["project"]["dependencies"])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of measured processes: no DIHYA_* switches, bytecode allowed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DIHYA_") and k not in ("PYTHONDONTWRITEBYTECODE",
                                                        "PYTHONPYCACHEPREFIX", "PYTHONPATH")}
    env.update(extra)
    return env


def verdict_at_most(value: float, limit: float, unit: str = "ms") -> str:
    """MET / NOT MET for an absolute target (`value` must not exceed `limit`)."""
    if value <= limit:
        return f"MET ({value:.1f} {unit} <= {limit:g} {unit})"
    return (f"NOT MET ({value:.1f} {unit} > {limit:g} {unit}, "
            f"{(value / limit - 1) * 100:.0f}% over)")


def tree_state() -> str:
    """The checkout the core wheel is built from: its commit and the files of the core
    modified since (read-only git queries; 'unknown' outside a git checkout)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # --no-optional-locks: never refresh (write) the index of the checkout
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "status",
                                "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:] for line in dirty
               if line[3:].startswith("core/") or line[3:] == "pyproject.toml"]
    if not changed:
        return head
    return f"{head} + uncommitted changes to {', '.join(changed)}"


def stop_server(proc: subprocess.Popen[Any], log: IO[str]) -> None:
    """Stop a server started with `start_new_session=True` (the arbiter and its workers):
    SIGTERM to its process group, SIGKILL if it has not ended within 30 s; then close `log`,
    the file its output goes to."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # our session: arbiter + workers
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()


def server_not_ready(label: str, log_path: Path) -> SystemExit:
    """The error that ends a script whose server `label` did not become ready (stopped by
    then): the end of the server's log at `log_path`."""
    return SystemExit(f"server {label} did not become ready:\n" + log_path.read_text()[-3000:])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants, and by
    the descendants they reaped (from /proc/PID/stat: utime, stime, cutime, cstime). A
    process that exited and was reaped counts in its reaper's cutime/cstime: a sandbox
    worker recycled during a round (`[sandbox] max_calls`) is still counted, start included.
    Only a process that exited unreaped, or whose reaper exited too, no longer counts."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    for current in pids:
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pids += [int(c) for c in f.read().split() if int(c) not in pids]
            except OSError:
                continue
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks
