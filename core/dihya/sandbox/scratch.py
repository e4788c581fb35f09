"""Scratch directories of sandbox workers: made per worker, removed when it stops, and
swept at start when a crashed backend left them behind.

A scratch dir is `$TMPDIR/dihya-sbx-<pid>.<start>-<plugin>-XXXXXXXX`, where pid and start
(the process start time, in clock ticks since boot, from /proc/<pid>/stat) name the backend
process that made it: a sweep removes only the dirs of processes that no longer exist, so
two backends sharing a /tmp never remove each other's.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Final

PREFIX: Final = "dihya-sbx-"
_OWNER: Final = re.compile(r"^dihya-sbx-(\d+)\.(\d+)-")
_swept = False


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def make_scratch(plugin: str) -> str:
    """A new private (0700) scratch directory for a worker of `plugin`."""
    pid = os.getpid()
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", plugin)[:20]
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{pid}.{_start_time(pid) or 0}-{label}-")
    os.chmod(path, 0o700)
    return path


def sweep_once() -> None:
    """`sweep_orphans()` the first time a process starts a sandbox pool."""
    global _swept
    if not _swept:
        _swept = True
        sweep_orphans()


def sweep_orphans(directory: str | None = None) -> list[str]:
    """Remove the scratch dirs whose backend process is gone; returns their paths."""
    where = directory or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return []
    for entry in entries:
        owner = _OWNER.match(entry.name)
        if owner is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid, start = int(owner.group(1)), owner.group(2)
        if _start_time(pid) == start:
            continue  # its backend still runs
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    return removed
