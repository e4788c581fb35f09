"""Remember what a registry build learned of the import path, re-checked by `stat`.

The verification cache (`dihya.gate.verifycache`) lets the gate skip hashing an unchanged
distribution; this module lets a rebuild skip what is left when nothing on the import path
changed: discovery (the `*.dist-info` directories of each path entry and their
`entry_points.txt`, METADATA and `direct_url.json`), module resolution (shadowing), the
installed versions that dependency checks compare, and the `.pth` scan.

Each remembered result carries the `stat` key (device, inode, size, `st_mtime_ns`,
`st_ctime_ns`; `verifycache.stat_key`) of every directory and file it depends on:

* a directory's key changes when an entry is added, removed or renamed in it (its ctime,
  which no unprivileged system call can set back), so the listing of a path entry, of a
  package directory and of a namespace portion is keyed on its directory;
* a file's key changes when its bytes change (ctime) or it is replaced (inode);
* a file that is absent is keyed on its directory (creating it changes the directory).

A result is only used when every key is unchanged; any difference (or a key that cannot be
read) and that part is computed again, as without this module, for the affected entry
only (a path entry's listing, one distribution, one plugin's resolution, one version).
Keys are only remembered when every mtime and ctime is more than `verifycache.RACY_NS`
(2 s) older than the moment the result was computed ("racily clean", as git does with its
index): a directory changed twice in one timestamp tick could otherwise keep its key.

Module resolution also depends on the import system's state in this process: the
`sys.meta_path` finders before `PathFinder`, `sys.path_hooks` and the finder of each path
entry (`sys.path_importer_cache`). A resolution is remembered only when those finders are
the standard ones (built-in, frozen, `FileFinder`, setuptools' `_distutils_hack`), and is
keyed on their kind (`dihya.gate.finders.kind`: type, and a `FileFinder`'s directory and
loaders), which another process can compare.

The memo lives in this process's memory (a server worker's reloads, a second listing) and,
for the parts registered with `persist`, across processes: the verification cache writes
its entries into its authenticated file (`VerifyCache.save`; a file per context, see
`dihya.gate.finders.context`) and a new process reads them back (`attach`), still encoded,
decoding an entry only once its checks held (every key compared by `stat` in the new
process, as for an entry of its own). With `DIHYA_VERIFY_CACHE=off` nothing is remembered
at all. `STATS` counts the hits and misses of each part, and `persisted.loaded` /
`persisted.hit` the entries read from the file and used. A build answered wholly from
memory leaves what it looked at (`observed`: every path and its key; `note_unkeyed` marks
a build that depended on anything else) for `dihya.gate.replay`, which compares it all
again at the next build. What this trusts is written in docs/threat-model.md ("The
import-path memo", "Across processes").
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, TypeVar

from dihya.gate import finders, verifycache
from dihya.gate.verifycache import RACY_NS, StatKey, stat_key

T = TypeVar("T")

#: Hits and misses per part ("discovery.listing", "discovery.dist", "resolution",
#: "version", "pth"): `STATS["resolution.hit"]` etc.
STATS: Counter[str] = Counter()

# (path, its key when the result was computed); None: absent (its directory is checked too)
Check = tuple[str, StatKey | None]

_LOCK = threading.Lock()
_MEMO: dict[Any, tuple[tuple[Check, ...], Any]] = {}
_MAX_ENTRIES: Final = 200_000

# Keys already looked at in this build (a build stats each path entry once, not once per
# plugin); None outside a build.
_PASS: ContextVar[dict[Any, Any] | None] = ContextVar("dihya_pathmemo_pass",
                                                                   default=None)
_STARTED: Final = ("started",)
# set in a pass whose answer depends on more than the keys it looked at (a result computed,
# not recalled; a listing compared): such a build leaves no trace (`dihya.gate.replay`)
_UNKEYED: Final = ("unkeyed",)
# bumped by `clear`: a trace of a build made before it is not replayed
_GENERATION: list[int] = [0]
_STANDARD_FINDERS: Final = (importlib.machinery.BuiltinImporter,
                            importlib.machinery.FrozenImporter)


def enabled() -> bool:
    """True unless the verification cache is off (`DIHYA_VERIFY_CACHE=off`); looked up
    once per build."""
    return shared_cache() is not None


def shared_cache() -> verifycache.VerifyCache | None:
    """`verifycache.shared()`, looked up once per build inside `one_pass`; the memo it
    persisted (`attach`) is read with it, once per cache (once per process)."""
    return per_pass(("verifycache",), _shared_attached)


def _shared_attached() -> verifycache.VerifyCache | None:
    cache = verifycache.shared()
    if cache is not None and cache is not _ATTACHED[0]:
        attach(cache)
    return cache


@contextmanager
def one_pass(known: Mapping[str, StatKey | None] | None = None) -> Iterator[None]:
    """Stat each path once while the block runs (one build). `known`: keys this build
    already took of some paths (`looked_at`), used as if taken in this pass (not inside
    another pass, whose keys are used)."""
    if _PASS.get() is not None:
        yield
        return
    token = _PASS.set({**(known or {}), _STARTED: time.time_ns()})
    try:
        yield
    finally:
        _PASS.reset(token)


def pass_started() -> int:
    """When this build started (now, outside one): keys looked at in this build are not
    older than that."""
    seen = _PASS.get()
    return time.time_ns() if seen is None else int(seen[_STARTED])


def replace(part: str, key: Any, old: Any, value: Any) -> None:
    """Change the value remembered under `key` from `old` (the value recalled) to `value`,
    keeping its checks (a value found to hold again, with fresher facts). Nothing when
    another build remembered another value meanwhile: its checks are not `old`'s."""
    with _LOCK:
        entry = _MEMO.get((part, key))
        if entry is None or entry[1] is not old:
            return
        _MEMO[(part, key)] = (entry[0], value)
    if part in _CODECS:
        _touch()


def key_of(path: str) -> StatKey | None:
    """`stat_key(path)`, looked at once per build inside `one_pass`."""
    seen = _PASS.get()
    if seen is None:
        return stat_key(path)
    # `get` with a marker, not `seen[path]` in a `try`: most paths are looked at once per
    # build, and a raised KeyError per path cost more than the lookup
    found: StatKey | None = seen.get(path, _MISSING)
    if found is _MISSING:
        found = seen[path] = stat_key(path)
    return found


def checks(paths: Iterable[str]) -> tuple[Check, ...]:
    return tuple((p, key_of(p)) for p in paths)


def settled(found: Sequence[Check], started_ns: int) -> bool:
    """True when every key that exists was last changed well before `started_ns`, and every
    absent path's directory is among the keys (so its creation would be seen)."""
    limit = started_ns - RACY_NS
    present = {p for p, k in found if k is not None}
    for path, key in found:
        if key is None:
            if not _ancestor_in(path, present):
                return False
        elif key[3] >= limit or key[4] >= limit:
            return False
    return True


def _ancestor_in(path: str, present: set[str]) -> bool:
    parent = os.path.dirname(path)
    while parent and parent != path:
        if parent in present:
            return True
        path, parent = parent, os.path.dirname(parent)
    return False


def still_valid(found: Sequence[Check]) -> bool:
    """Every check's path has its key now (`key_of`: looked at once per build)."""
    seen = _PASS.get()
    if seen is None:
        return all(stat_key(path) == key for path, key in found)
    get = seen.get
    for path, key in found:
        now = get(path, _MISSING)
        if now is _MISSING:
            now = seen[path] = stat_key(path)
        if now != key:
            return False
    return True


def recall(part: str, key: Any) -> tuple[bool, Any]:
    """(True, the remembered value) when every check of `key`'s entry still holds. An
    entry read from the persisted memo is decoded here, after its checks held."""
    if part in _SECTIONS:
        _unpack(part)
    entry = _MEMO.get((part, key))
    if entry is not None and still_valid(entry[0]):
        value = entry[1]
        if type(value) is _Raw:
            value = _decode(part, key, entry)
            if value is _MISSING:
                return False, None
        return True, value
    return False, None


def count(part: str, hit: bool) -> None:
    STATS[part + (".hit" if hit else ".miss")] += 1
    if not hit:
        note_unkeyed()


def note_unkeyed() -> None:
    """This build's answer depends on more than the keys it looked at (a result computed,
    a directory listed): it leaves no trace to replay (`dihya.gate.replay`)."""
    seen = _PASS.get()
    if seen is not None:
        seen[_UNKEYED] = True


def observed() -> dict[str, StatKey | None] | None:
    """Inside `one_pass`: {path: its key} of every path looked at in this pass by `key_of`,
    or None when the pass's answer depends on anything else (`note_unkeyed`) or outside a
    pass."""
    seen = _PASS.get()
    if seen is None or _UNKEYED in seen:
        return None
    return {p: k for p, k in seen.items() if type(p) is str}


def looked_at(suffix: str) -> dict[str, StatKey | None]:
    """Inside `one_pass`: {path: its key} of the paths ending with `suffix` looked at so far
    in this pass ({} outside one), whatever else the pass depended on."""
    seen = _PASS.get()
    if seen is None:
        return {}
    return {p: k for p, k in seen.items() if type(p) is str and p.endswith(suffix)}


def generation() -> int:
    """How many times the memo was cleared (`clear`) in this process."""
    return _GENERATION[0]


def remember(part: str, key: Any, found: Sequence[Check], started_ns: int,
             value: Any) -> None:
    """Remember `value` under `key` if every check is settled; else forget any entry."""
    if part in _SECTIONS:
        _unpack(part)
    with _LOCK:
        if not settled(found, started_ns):
            _MEMO.pop((part, key), None)
            return
        if len(_MEMO) >= _MAX_ENTRIES:
            _MEMO.clear()
        _MEMO[(part, key)] = (tuple(found), value)
    if part in _CODECS:
        _touch()


def memoized(part: str, key: Any,
             compute: Callable[[], tuple[T, Sequence[Check] | None]]) -> T:
    """`compute()`'s value, remembered under `key` with the checks it returns (None: not
    remembered)."""
    if not enabled():
        note_unkeyed()
        return compute()[0]
    hit, value = recall(part, key)
    count(part, hit)
    if hit:
        return value  # type: ignore[no-any-return]
    started = time.time_ns()
    value, found = compute()
    if found is None:
        with _LOCK:
            _MEMO.pop((part, key), None)
    else:
        remember(part, key, found, started, value)
    return value


def per_pass(key: Any, compute: Callable[[], T]) -> T:
    """`compute()`, once per build inside `one_pass` (every time outside one)."""
    seen = _PASS.get()
    if seen is None:
        return compute()
    try:
        value: T = seen[key]
    except KeyError:
        value = seen[key] = compute()
    return value


def clear() -> None:
    """Forget everything (tests; a process that knows its path changed behind its back),
    and read the persisted memo again with the next cache."""
    with _LOCK:
        _MEMO.clear()
        _SECTIONS.clear()
        _ATTACHED[0] = None
        _GENERATION[0] += 1


# -- across processes: the memo persisted in the verification cache's file -----------------
#
# A part registered with `persist` is written into the verification cache's authenticated
# file (`VerifyCache.save`) and read back by the next process (`attach`): each entry with
# its checks, its value encoded by the part's codec into what `marshal` writes. An entry
# read back is kept encoded (`_Raw`) until it is recalled: its checks are compared first,
# exactly as for an entry of this process, and only then is it decoded. Entries whose part
# has no codec stay in memory only.

Encode = Callable[[Any], Any]
_CODECS: dict[str, tuple[Encode, Encode]] = {}
# the cache whose file the memo was read from and is written to (one at a time)
_ATTACHED: list[verifycache.VerifyCache | None] = [None]
# the parts read from that file and not used yet, each still its encoded section: decoded
# (`_unpack`) when the part is first recalled or remembered
_SECTIONS: dict[str, bytes] = {}


class _Raw:
    """A persisted value not decoded yet."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def _same(value: Any) -> Any:
    return value


def persist(part: str, encode: Encode = _same, decode: Encode = _same) -> None:
    """Keep `part`'s entries across processes: `encode(value)` must give what `marshal`
    writes (str, int, None, tuples, lists, dicts, frozensets of those), `decode` the
    value back."""
    _CODECS[part] = (encode, decode)


def attach(cache: verifycache.VerifyCache) -> None:
    """Take the sections of the memo `cache`'s file holds for this context, each added
    (its entries this process does not hold already, encoded) when its part is first used;
    `cache` writes this process's entries at its next save."""
    with _LOCK:
        if _ATTACHED[0] is cache:
            return
        _ATTACHED[0] = cache
    sections = cache.memo_parts()
    cache.memo_source = _dump
    with _LOCK:
        _SECTIONS.clear()
        _SECTIONS.update(sections)


def _unpack(part: str) -> None:
    """Add the entries of `part`'s section read from the file (checked first: a malformed
    section is ignored, and the file rewritten at the next save)."""
    with _LOCK:
        section = _SECTIONS.pop(part, None)
    if section is None:
        return
    try:
        loaded = verifycache.memo_section(part, section)
    except ValueError:
        STATS["persisted.rejected"] += 1
        _touch()
        return
    added = 0
    with _LOCK:
        for ident, (found, data) in loaded.items():
            if ident not in _MEMO and len(_MEMO) < _MAX_ENTRIES:
                _MEMO[ident] = (found, _Raw(data))
                added += 1
    STATS["persisted.loaded"] += added


def _decode(part: str, key: Any, entry: tuple[tuple[Check, ...], Any]) -> Any:
    """The value of a persisted entry whose checks held, decoded (and kept decoded); the
    entry is dropped when it cannot be (`_MISSING`)."""
    codec = _CODECS.get(part)
    try:
        if codec is None:
            raise ValueError(part)
        value = codec[1](entry[1].data)
    except Exception:  # written by this code under this key, but not understood: ignored
        STATS["persisted.rejected"] += 1
        with _LOCK:
            if _MEMO.get((part, key)) is entry:
                del _MEMO[(part, key)]
        return _MISSING
    STATS["persisted.hit"] += 1
    ident = (part, key)
    with _LOCK:
        if _MEMO.get(ident) is entry:
            _MEMO[ident] = (entry[0], value)
    return value


def _touch() -> None:
    cache = _ATTACHED[0]
    if cache is not None:
        cache.memo_changed()


def _dump() -> dict[str, bytes | dict[Any, Any]]:
    """The persisted parts for the cache file: {part: its section as read (not used by
    this process), or its entries, encoded}."""
    with _LOCK:
        items = list(_MEMO.items())
        out: dict[str, bytes | dict[Any, Any]] = dict(_SECTIONS)
    for (part, key), (found, value) in items:
        codec = _CODECS.get(part)
        if codec is None or type(out.get(part)) is bytes:
            continue
        try:
            encoded = (found, value.data if type(value) is _Raw else codec[0](value))
        except Exception:  # a value this codec cannot write stays in memory
            continue
        entries = out.setdefault(part, {})
        assert type(entries) is dict
        entries[(part, key)] = encoded
    return out


# -- the import system's state, for module resolution ------------------------------------


def finder_state(top: Sequence[str], meta: Sequence[Any]) -> tuple[Any, ...] | None:
    """The finders resolution consults, by kind (`dihya.gate.finders.kind`: comparable in
    another process, so a persisted resolution can be used there), when all are standard;
    else None (then nothing is remembered: a custom finder may depend on anything)."""
    for finder in meta:
        if not standard_meta(finder):
            return None
    entries = []
    for entry in top:
        finder = sys.path_importer_cache.get(entry or cwd(), _MISSING)
        if finder is _MISSING:
            return None  # not looked up yet: the first resolution fills the cache
        if finder is not None and type(finder) is not importlib.machinery.FileFinder:
            return None
        entries.append(finder)
    return finders.kind((tuple(meta), tuple(sys.path_hooks), tuple(entries)))  # type: ignore[no-any-return]


def standard_metadata_finder(finder: Any) -> bool:
    """True for a `sys.meta_path` entry that finds no distributions but `PathFinder`'s own
    (`importlib.metadata` asks every finder with `find_distributions`)."""
    return (finder is importlib.machinery.PathFinder
            or getattr(finder, "find_distributions", None) is None)


def standard_dirs(dirs: Iterable[str]) -> bool:
    """True when every directory's finder (if looked up) is a plain `FileFinder`."""
    for d in dirs:
        finder = sys.path_importer_cache.get(d)
        if finder is not None and type(finder) is not importlib.machinery.FileFinder:
            return False
    return True


_MISSING: Final = object()


def standard_meta(finder: Any) -> bool:
    """True for a `sys.meta_path` finder before `PathFinder` that depends on nothing but
    the module name (built-in, frozen, setuptools' distutils shim)."""
    if finder in _STANDARD_FINDERS:
        return True
    kind = type(finder)
    # setuptools' distutils shim: answers by module name only (`spec_for_<name>`)
    return kind.__name__ == "DistutilsMetaFinder" and kind.__module__ == "_distutils_hack"


def cwd() -> str:
    """The current directory ("" if it is gone): what a "" path entry stands for."""
    try:
        return os.getcwd()
    except OSError:
        return ""


def path_checks(top: Sequence[str]) -> tuple[Check, ...]:
    """The keys of the path entries themselves (the current directory for ""); for an
    entry that does not exist, also its nearest existing ancestor (where it would be
    created); for a directory, also each symbolic link in it whose name ends like a
    metadata directory (`link_checks`)."""
    found: list[Check] = []
    for entry in top:
        path = os.path.abspath(entry or cwd() or ".")
        key = key_of(path)
        found.append((path, key))
        if key is not None:
            found += link_checks(path, METADATA_SUFFIXES)
        while key is None:
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
            key = key_of(path)
            found.append((path, key))
    return tuple(found)


METADATA_SUFFIXES: Final = (".dist-info", ".egg-info")


def link_checks(directory: str, suffixes: tuple[str, ...] | None = None
                ) -> tuple[Check, ...]:
    """The keys (following the link) of the symbolic links in `directory` (those whose
    name ends with one of `suffixes`, when given). A link's target can appear, go or be
    replaced without the directory holding the link changing: a result that depends on
    what is behind a link is keyed on the link itself. Which links a directory holds is
    remembered while the directory's key is unchanged (adding or removing one changes it).
    Nothing when the memo is off (no key is compared then)."""
    if not enabled():
        return ()

    def compute() -> tuple[tuple[str, ...], Sequence[Check]]:
        links: list[str] = []
        with contextlib.suppress(OSError), os.scandir(directory) as it:
            links = sorted(e.path for e in it if e.is_symlink()
                           and (suffixes is None or e.name.endswith(suffixes)))
        return tuple(links), checks([directory])

    return checks(memoized("links", (directory, suffixes), compute))
