"""A rebuild when nothing changed: the last build's checks replayed, its answer reused.

A registry build answered wholly from memory (every part of the import-path memo and
every distribution of the verification cache recalled by its keys, none computed, no
directory listed: `pathmemo.observed`) decided its verdicts from what it saw:

* the `stat` key (device, inode, size, `st_mtime_ns`, `st_ctime_ns`) of every path it
  looked at — each hashed file, package directory and RECORD of every verified
  distribution, each `entry_points.txt`, METADATA and `direct_url.json`, each path entry
  and directory a module resolution or a version depends on, each `.pth` file and site
  directory, and each path that must be absent (as absent);
* the real path of each site directory;
* the import system's finders (`sys.meta_path`, `sys.path_hooks` by identity, each path
  entry's finder by kind, as module resolution compares them) and the current directory
  when a path entry is relative;
* its inputs: the config (allowlist, group, acknowledged `.pth` files), the plugins
  disabled by the environment, the runtime switches, the import path.

`Trace` keeps all of these, taken during that build, with the build's answer. The next
build `holds` it by comparing each again — every path `stat`ed afresh, none skipped — and,
when every one is the same, reuses the answer instead of recomputing it from the same
memory (the Python around the checks was most of a rebuild's cost). Any difference, and
the build runs in full, as before. A trace is only made when every key it holds was last
changed more than `verifycache.RACY_NS` (2 s) before the build started ("racily clean",
as for the memo), so an unchanged key means an unchanged file. What this trusts is the
memo's and the cache's trust, nothing more: see docs/threat-model.md ("A rebuild with
nothing changed").
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import attrs

from dihya.gate import pathmemo, verifycache
from dihya.gate.verifycache import StatKey

#: "hit": a build answered by replaying the last one's checks; "miss": a trace that no
#: longer held; "none": no trace to replay (the last build was not answered from memory).
STATS: Counter[str] = Counter()


@attrs.frozen(eq=False)
class Trace:
    """What one build looked at and what it found; `value` is the caller's answer."""

    inputs: tuple[Any, ...]  # compared with ==
    cache: verifycache.VerifyCache  # the verification cache the build used (by identity)
    generation: int  # `pathmemo.generation()` then: a cleared memo voids the trace
    finders: tuple[Any, ...]  # `sys.meta_path` and `sys.path_hooks`, by identity
    environment: Any  # the path entries' finders by kind (`resolution.environment`)
    realpaths: tuple[tuple[str, str], ...]  # (directory, its real path)
    paths: tuple[str, ...]
    keys: tuple[StatKey | None, ...]  # None: the path was absent
    value: Any


def finders() -> tuple[Any, ...]:
    return (tuple(sys.meta_path), tuple(sys.path_hooks))


def make(inputs: tuple[Any, ...], seen: Iterable[Mapping[str, StatKey | None] | None],
         started_ns: int, before: tuple[Any, Any], realpaths: Mapping[str, str],
         value: Any, after: tuple[Any, Any]) -> Trace | None:
    """A trace of a build that started at `started_ns` and looked at `seen` (one mapping
    per pass, `pathmemo.observed`), or None when it cannot be replayed: a pass was not
    answered from memory, a path was seen with two keys, a key is not settled, the finders
    are not standard ones, or they changed while the build ran (`before` and `after`: the
    finders and `resolution.environment` when it started and when it ended)."""
    cache = pathmemo.shared_cache()
    found, environment = before
    if (cache is None or environment is None or environment[0] is None
            or environment != after[1] or not _same(found, after[0])):
        return None
    merged: dict[str, StatKey | None] = {}
    for keys in seen:
        if keys is None:
            return None
        if not merged:
            merged.update(keys)  # the first pass: nothing to compare with
            continue
        for path, key in keys.items():
            if merged.setdefault(path, key) != key:
                return None  # changed while the build ran
    limit = started_ns - verifycache.RACY_NS
    present = [key for key in merged.values() if key is not None]
    # the latest mtime and ctime of them all, taken in C
    if present and max(chain.from_iterable(map(_TIMES, present))) >= limit:
        return None
    return Trace(inputs, cache, pathmemo.generation(), found, environment,
                 tuple(sorted(realpaths.items())), tuple(merged), tuple(merged.values()),
                 value)


_TIMES: Final = itemgetter(3, 4)  # a stat key's mtime and ctime


def holds(trace: Trace | None, inputs: tuple[Any, ...], environment: Any) -> bool:
    """True when everything `trace`'s build looked at is as it was: every path `stat`ed
    again with the same key (absent ones still absent), the same real paths, finders,
    inputs, verification cache and memo."""
    if trace is None:
        STATS["none"] += 1
        return False
    ok = (trace.cache is pathmemo.shared_cache()
          and trace.generation == pathmemo.generation()
          and _same(trace.finders, finders())
          and trace.inputs == inputs
          and trace.environment == environment
          and all(os.path.realpath(d) == real for d, real in trace.realpaths)
          and _keys_hold(trace.paths, trace.keys))
    STATS["hit" if ok else "miss"] += 1
    return ok


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(p is q for p, q in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


def _keys_hold(paths: Sequence[str], keys: Sequence[StatKey | None]) -> bool:
    """A `stat` of every path, compared with its key: the same checks the memo and the
    verification cache make on a rebuild, each path once."""
    stat = os.stat
    for path, key in zip(paths, keys, strict=True):
        try:
            st = stat(path)
        except OSError:
            if key is None:
                continue
            return False
        if key is None or key != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                  st.st_ctime_ns):
            return False
    return True


# the last trace made in this process: one slot (a process builds for one config)
_LAST: list[Trace | None] = [None]


def last() -> Trace | None:
    return _LAST[0]


def keep(trace: Trace | None) -> None:
    """Remember `trace` for the next build (None: forget the last one)."""
    _LAST[0] = trace
