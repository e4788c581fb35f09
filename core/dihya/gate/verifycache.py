"""Verify once, remember safely: a cache of verified distributions, re-checked by `stat`.

Hashing every installed file of every plugin on each listing, reload and worker start is
most of the gate's cost. This cache remembers, per `*.dist-info` directory, what
`fingerprint.inspect_installed` found (fingerprint, files; only when nothing was missing
or unlisted) together with a key that anyone without root cannot forge cheaply:

* RECORD's own `stat` key (below); when it changed, RECORD is read again and the SHA-256
  of its bytes compared (RECORD is the list of files);
* for every hashed file, the `os.stat` of the path as read (through links): device, inode,
  size, `st_mtime_ns` and `st_ctime_ns`. Changing a file's bytes changes its ctime (which
  `os.utime` cannot set back, unlike the mtime), replacing it by a rename changes its inode;
* the same for every package directory the unlisted-file check listed (a file added or
  removed there changes the directory's ctime), and the absence of the files that would
  sit beside a top-level module (one `stat` each);
* the real path of site-packages.

Any difference, and the distribution is read and hashed again in full. Discovery, module
resolution (shadowing), `.pth` files and dependency versions are remembered separately by
`dihya.gate.pathmemo` (keyed on the import path's directories), whose entries this cache
writes into its file too (`memo_entries`, `memo_source`); the allowlist is compared on
every build.

Parsed METADATA (name, version, requirements) is cached the same way, keyed on the stat of
the METADATA file.

Entries are only remembered when every file's mtime and ctime are at least `RACY_NS` older
than the start of the hashing (as git does with its index): a file written in the same
timestamp tick as it was read could otherwise keep its ctime and look unchanged.

The cache persists in `$XDG_CACHE_HOME/dihya/verified-UID-CONTEXT.json` (default
`~/.cache`; CONTEXT: `finders.context()`, a short hash of the interpreter, `sys.path` and
the finder kinds, so that processes of different contexts do not overwrite each other's
memo; files of another context not written for 14 days are removed), or the file
`DIHYA_VERIFY_CACHE` names (`off`: no cache at all), written atomically with mode 0600 in a
directory of this user that no one else can write, authenticated with HMAC-SHA256 under a
random key kept beside it (`verified-UID.key`, shared by the contexts; `NAME.key` beside a
named file; 0600). The body is `marshal`-encoded (format v4) and is decoded only after its
MAC matched (the MAC covers the whole body); each part is written with its repeated
strings, numbers and tuples made one object (`shared_values`), which `marshal` writes once
and then refers to (the file's string table: ≈ 14 % smaller at N = 1000, the same values
read back and checked the same way). The verified distributions are decoded and
checked at once; the parsed METADATA and each part of the memo are sections of the body
(`marshal` bytes of their own), each decoded and checked when a build first uses it — a
build answered by the memo never decodes the METADATA, the `.pth` owners or the link
listings. A file that is not a regular file of this user, not 0600-tight, not
authenticated by the key, or whose distributions are not understood is ignored — never
trusted — and replaced at the next save; a section that is not understood is ignored
alone (never used) and rewritten at the next save; a memo written for another context is
ignored (the verified distributions of such a file are still each re-checked by `stat`,
as always). What this trusts is written in
docs/threat-model.md ("The verification cache").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import marshal
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import attrs

from dihya.gate import finders
from dihya.gate.fingerprint import (
    FingerprintError,
    InstalledFiles,
    inspect_installed_detail,
    realpath,
)

ENV: Final = "DIHYA_VERIFY_CACHE"
#: Files whose mtime or ctime is this close to the start of their hashing are not remembered.
RACY_NS: Final = 2_000_000_000
#: v3: the unlisted-file walk also looks into `__pycache__/` and at links (an entry of a v1
#: file was made without them, so it is not trusted: the whole file is ignored, then
#: replaced), and the body is marshal with the persisted import-path memo (`pathmemo`).
#: v4: the METADATA and each memo part are sections decoded when first used.
_MAGIC: Final = b"dihya-verify-cache-v4"
#: A cache file of another context (`finders.context`) not written for this long is removed.
STALE_CONTEXT_S: Final = 14 * 24 * 3600
_KEY_BYTES: Final = 32
_MAX_FILE_BYTES: Final = 256 * 1024 * 1024

# (dev, ino, size, mtime_ns, ctime_ns)
StatKey = tuple[int, int, int, int, int]


@attrs.frozen
class Metadata:
    """What the gate reads of a distribution's METADATA."""

    name: str | None
    version: str | None
    requires: tuple[str, ...] | None


class _Compiled:
    """What a hit needs of one cache entry, derived from it once (a plain class: made for
    every entry a fresh process uses)."""

    __slots__ = ("entry", "found", "prefix", "record", "site")

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        self.entry = entry  # the entry this was made from (of the `*.dist-info` `where`)
        self.site = os.path.dirname(where)  # the directory the entry's paths are relative to
        # what `os.path.join(site, rel)` puts before a relative path (`_checked` makes sure
        # that every remembered path is relative)
        self.prefix = self.site if self.site.endswith("/") else self.site + "/"
        self.record = os.path.join(where, "RECORD")  # RECORD's path
        self.found = InstalledFiles(entry["fingerprint"], tuple(entry["files"]), (), ())


def _holds(compiled: _Compiled, stat: Callable[[str], StatKey | None]) -> bool:
    """Every hashed file and listed package directory of the entry has its key (a `stat`
    each, every time) and every file that must be absent is."""
    entry, prefix = compiled.entry, compiled.prefix
    for rel, key in entry["keys"]:
        if stat(prefix + rel) != key:
            return False
    for rel, key in entry["dirs"]:
        if stat(prefix + rel) != key:
            return False
    absent = entry["absent"]
    # `stat` rather than `os.path.exists`: in a build, what it looked at is remembered
    # with the rest (`pathmemo.observed`), absent paths included
    return not absent or all(stat(prefix + rel) is None for rel in absent)


def stat_key(path: str) -> StatKey | None:
    """The cache key of one path (following links, as reading it does), or None if gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _settled(keys: Sequence[StatKey | None], started_ns: int) -> bool:
    """True when every key exists and was last changed well before `started_ns`."""
    limit = started_ns - RACY_NS
    return all(k is not None and k[3] < limit and k[4] < limit for k in keys)


class VerifyCache:
    """Verified distributions and parsed METADATA, by `*.dist-info` path, in memory and
    (when `path` is set) in an authenticated file."""

    def __init__(self, path: Path | None, key_path: Path | None = None,
                 context: str | None = None) -> None:
        self.path = path
        # the HMAC key: beside the file (`NAME.key`) unless named
        self.key_path = key_path if key_path is not None or path is None else \
            path.with_name(path.name + ".key")
        # what the persisted import-path memo is for: a memo of another context is ignored
        self.context = context if context is not None else finders.context()
        # `dihya.gate.pathmemo`'s entries as read from the file, one encoded section per
        # part (until taken by `memo_parts`), and how to get this process's at a save
        # (`memo_source`: {part: its section as read, or its entries})
        self._memo: dict[str, bytes] = {}
        self.memo_source: Callable[[], dict[str, bytes | dict[Any, Any]]] | None = None
        self._lock = threading.RLock()
        self._dists: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # the METADATA section as read, decoded at the first `metadata` (a build whose
        # discovery is answered by the memo never asks)
        self._meta_section: bytes | None = None
        self._loaded = path is None
        self._dirty = False
        self.hits = 0
        self.misses = 0
        # per entry of `_dists` (that very dict object): its checks as absolute paths and
        # the answer of a hit, made once, not per build; made again for a new entry (a
        # miss, a reload of the file), whatever the `where` it is under
        self._compiled: dict[str, _Compiled] = {}

    # -- lookups ------------------------------------------------------------------------

    def inspect(self, dist_info: Path,
                stat: Callable[[str], StatKey | None] | None = None) -> InstalledFiles:
        """`fingerprint.inspect_installed(dist_info)`: from the cache when nothing of the key
        changed, else read and hashed in full (and remembered when clean and settled).

        `stat`: how the keys are looked at for the comparison (default `stat_key`; a build
        passes `pathmemo.key_of`, so a file discovery already looked at in this build is
        not looked at twice). The keys remembered are always taken afresh."""
        self._load()
        stat = stat or stat_key
        where = os.fspath(dist_info)
        with self._lock:
            entry = self._dists.get(where)
        compiled = None if entry is None else self._compile(where, entry)
        record_path = os.path.join(where, "RECORD") if compiled is None else compiled.record
        record_key = stat(record_path)
        root = realpath(os.path.dirname(where) if compiled is None else compiled.site)
        if (compiled is not None and entry is not None and record_key is not None
                and entry.get("record_key") == record_key and entry["root"] == root
                and _holds(compiled, stat)):
            self.hits += 1  # RECORD unchanged (its key): not even read
            return compiled.found
        try:
            with open(record_path, "rb") as fh:
                record = fh.read()
        except OSError as exc:
            raise FingerprintError(f"{dist_info}: cannot read RECORD: {exc}") from exc
        record_sha = hashlib.sha256(record).hexdigest()
        if entry is not None and self._still_valid(entry, where, record_sha, root, stat):
            self.hits += 1
            if record_key is not None and _settled([record_key], time.time_ns()):
                with self._lock:
                    entry["record_key"] = record_key
                    self._dirty = True
            return self._compile(where, entry).found
        self.misses += 1
        started = time.time_ns()
        try:
            # as `open(..., encoding="utf-8")` reads it: universal newlines
            text = record.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            raise FingerprintError(f"{dist_info}: cannot read RECORD: {exc}") from exc
        detail = inspect_installed_detail(dist_info, text)
        found = detail.installed
        with self._lock:
            self._dists.pop(where, None)
        if found.missing or found.unlisted:
            return found  # refusals are never remembered
        site = os.fspath(dist_info.parent)
        file_keys = [stat_key(os.path.join(site, rel)) for rel in detail.hashed]
        dir_keys = [stat_key(os.path.join(site, rel)) for rel in detail.package_dirs]
        if not _settled(file_keys + dir_keys, started):
            return found
        # RECORD's key, taken before it was read: unchanged, RECORD need not be read again
        settled_record = record_key is not None and _settled([record_key], started)
        files = [[rel, k] for rel, k in zip(detail.hashed, file_keys, strict=True)]
        dirs = [[rel, k] for rel, k in zip(detail.package_dirs, dir_keys, strict=True)]
        with self._lock:
            self._dists[where] = {
                "record": record_sha, "root": root, "fingerprint": found.fingerprint,
                "files": list(found.files), "keys": files, "dirs": dirs,
                "absent": list(detail.absent),
                "record_key": record_key if settled_record else None}
            self._dirty = True
        return found

    def remembers(self, dist_info: Path) -> bool:
        """True when an entry for `dist_info` is held (valid or not)."""
        with self._lock:
            return os.fspath(dist_info) in self._dists

    def _compile(self, where: str, entry: dict[str, Any]) -> _Compiled:
        """What `entry`'s checks need (the site's prefix, RECORD's path) and its answer (an
        immutable `InstalledFiles`), made once per entry object."""
        compiled = self._compiled.get(where)
        if compiled is not None and compiled.entry is entry:
            return compiled
        compiled = _Compiled(entry, where)
        with self._lock:
            self._compiled[where] = compiled
        return compiled

    def _still_valid(self, entry: dict[str, Any], where: str, record_sha: str,
                     root: str, stat: Callable[[str], StatKey | None] = stat_key) -> bool:
        """Every hashed file and listed package directory has its key (a `stat` each,
        every time), every absent file is still absent, RECORD and the site's real path
        are the same."""
        if entry["record"] != record_sha or entry["root"] != root:
            return False
        return _holds(self._compile(where, entry), stat)

    def metadata(self, dist_info: Path, parse: Any) -> Metadata:
        """The name, version and requirements of METADATA in `dist_info`; `parse()` returns
        the parsed message (`importlib.metadata`'s) when the cache cannot answer."""
        self._load()
        where = os.path.join(os.fspath(dist_info), "METADATA")
        key = stat_key(where)
        with self._lock:
            self._meta_decoded()
            entry = self._meta.get(where)
        if key is not None and entry is not None and tuple(entry["key"]) == key:
            requires = entry["requires"]
            return Metadata(entry["name"], entry["version"],
                            None if requires is None else tuple(requires))
        started = time.time_ns()
        meta = parse()
        reqs = meta.get_all("Requires-Dist") if meta is not None else None
        found = Metadata(meta["Name"] if meta is not None else None,
                         meta["Version"] if meta is not None else None,
                         tuple(reqs) if reqs else None)
        after = stat_key(where)
        with self._lock:
            self._meta.pop(where, None)
            if after is not None and after == key and _settled([after], started):
                self._meta[where] = {"key": list(after), "name": found.name,
                                     "version": found.version,
                                     "requires": None if found.requires is None
                                     else list(found.requires)}
                self._dirty = True
        return found

    # -- the import-path memo (`dihya.gate.pathmemo`) -------------------------------------

    def memo_parts(self) -> dict[str, bytes]:
        """The persisted import-path memo read from the file (when it authenticated, is
        this user's and was written for this context), handed over once: {part: its
        section}, each decoded by `memo_section` when the part is first used."""
        self._load()
        with self._lock:
            found, self._memo = self._memo, {}
        return found

    def memo_entries(self) -> dict[Any, Any]:
        """Every part of `memo_parts` decoded: {(part, key): (checks, encoded value)}, each
        check a (path, stat key or None); {} when one part is malformed."""
        found: dict[Any, Any] = {}
        try:
            for part, section in self.memo_parts().items():
                found.update(memo_section(part, section))
        except ValueError:
            return {}
        return found

    def _meta_decoded(self) -> None:
        """Decode the METADATA section read from the file, once (under the lock); a
        malformed one is ignored (every METADATA is then parsed) and rewritten."""
        section, self._meta_section = self._meta_section, None
        if section is None:
            return
        try:
            meta = _checked_meta(marshal.loads(section))
        except (ValueError, TypeError, KeyError, EOFError):
            self._dirty = self.path is not None
            return
        for where, entry in meta.items():
            self._meta.setdefault(where, entry)

    def memo_changed(self) -> None:
        """The memo has entries to write at the next save."""
        if self.path is not None:
            self._dirty = True

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            assert self.path is not None
            # authenticated first: nothing of the file is decoded before its MAC matched
            body = _read_authenticated(self.path, self.key_path)
            if body is None:
                return
            try:
                data = marshal.loads(body)
                dists = _checked(data)
                meta, memo = data["meta"], data["memo"]
                if (type(meta) is not bytes or type(memo) is not dict
                        or not _all_of(memo, _STR) or not _all_of(memo.values(), _BYTES)):
                    raise ValueError("malformed")
            except (ValueError, TypeError, KeyError, EOFError):
                return
            self._dists, self._meta_section = dists, meta
            self._memo = memo if data.get("context") == self.context else {}

    def save(self) -> None:
        """Write the entries (when something changed) atomically; errors are ignored: the
        cache is only ever a shortcut."""
        if self.path is None or not self._dirty:
            return
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            dists = {k: v for k, v in self._dists.items() if os.path.isdir(k)}
            self._meta_decoded()
            meta = {k: v for k, v in self._meta.items()
                    if os.path.isdir(os.path.dirname(k))}
            parts: dict[str, bytes | dict[Any, Any]] = dict(self._memo)
            if self.memo_source is not None:
                parts.update(self.memo_source())
            memo = {}
            for part, entries in parts.items():
                try:  # one section per part: a process decodes only the parts it uses
                    memo[part] = entries if type(entries) is bytes else \
                        marshal.dumps(shared_values(entries, {}))
                except ValueError:  # a value marshal cannot write: that part stays in memory
                    continue
            table: dict[Any, Any] = {}
            data = {"uid": os.geteuid(), "context": self.context,
                    "dists": shared_values(dists, table),
                    "meta": marshal.dumps(shared_values(meta, table)), "memo": memo}
            body = marshal.dumps(data)
            with contextlib.suppress(OSError):
                _write_authenticated(self.path, body, self.key_path)
                _remove_stale(self.path)

    def clear(self) -> None:
        with self._lock:
            self._dists.clear()
            self._meta.clear()
            self._meta_section = None
            self._dirty = self.path is not None


def shared_values(value: Any, table: dict[Any, Any]) -> Any:
    """`value` with each string, number and tuple identical to one met before (`table`)
    replaced by that one, lists and dicts copied: `marshal` writes an object it already
    wrote as a reference to it, so a section's repeated paths, keys and finder states are
    written (and read back) once — a string table made by `marshal` itself. Alike means
    the same type and value, all the way down (`True` is not `1`, `(False,)` not `(0,)`):
    what is read back is `value`, and is checked the same way."""
    kind = type(value)
    if kind is list:
        return [shared_values(v, table) for v in value]
    if kind is dict:
        return {shared_values(k, table): shared_values(v, table) for k, v in value.items()}
    if kind is tuple:
        items: Any = tuple(shared_values(v, table) for v in value)
        # the items are the table's own objects (kept alive by it): alike by identity
        key: Any = (tuple, *map(id, items))
    elif kind is frozenset:
        items = frozenset(shared_values(v, table) for v in value)
        key = (frozenset, frozenset(map(id, items)))
    elif kind in _SHARED_SCALARS:
        items, key = value, (kind, value)
    else:
        return value
    return table.setdefault(key, items)


_SHARED_SCALARS: Final = frozenset({str, int, bytes, bool, type(None)})


def memo_section(part: str, section: bytes) -> dict[Any, Any]:
    """The entries of one part's section of the persisted memo (read from a file that
    authenticated): {(part, key): (checks, encoded value)}; ValueError when malformed or
    holding another part's entries (then the part is ignored and rewritten)."""
    try:
        memo = _checked_memo(marshal.loads(section))
    except (TypeError, KeyError, EOFError) as exc:
        raise ValueError("malformed") from exc
    if set(map(_FIRST, memo)) - {part}:
        raise ValueError("malformed")
    return memo


def _checked_memo(memo: Any) -> dict[Any, Any]:
    """The memo entries of a decoded section; ValueError when malformed. Only the checks
    are looked at here; a value is decoded, by its part's codec, when its checks held
    (`pathmemo.recall`).

    Each kind of element is checked for the whole memo at once (`_all_of`: the set of its
    types, of its lengths), not element by element in Python: the same checks, in C."""
    if memo is None:
        return {}
    if not isinstance(memo, dict):
        raise ValueError("malformed")
    idents, entries = list(memo), list(memo.values())
    found = list(map(_FIRST, entries)) if _all_of(entries, _TUPLE, 2) else None
    if (found is None or not _all_of(idents, _TUPLE, 2)
            or not _all_of(map(_FIRST, idents), _STR) or not _all_of(found, _TUPLE)):
        raise ValueError("malformed")
    checks = list(chain.from_iterable(found))
    if (not _all_of(checks, _TUPLE, 2) or not _all_of(map(_FIRST, checks), _STR)
            or not _keys_or_none(list(map(_SECOND, checks)))):
        raise ValueError("malformed")
    return memo


_FIRST: Final = itemgetter(0)
_SECOND: Final = itemgetter(1)
_TUPLE: Final = frozenset({tuple})
_STR: Final = frozenset({str})
_SEQUENCE: Final = frozenset({list, tuple})
_INT: Final = frozenset({int})
_NONE: Final = frozenset({type(None)})


def _all_of(items: Iterable[Any], types: frozenset[type], length: int | None = None
            ) -> bool:
    """True when every item's type is one of `types` (exactly: what `marshal` gives has no
    subclasses but bool, which is not int here) and, with `length`, every item has that
    length (`items` must then be a sequence)."""
    if not types.issuperset(map(type, items)):
        return False
    return length is None or set(map(len, items)) <= {length}


def _keys_or_none(keys: list[Any]) -> bool:
    """True when every item is None or a stat key (`_are_keys`)."""
    present = [k for k in keys if k is not None]
    return _are_keys(present)


def _are_keys(keys: list[Any]) -> bool:
    """True when every item is a stat key as written: a list or tuple of five ints (not
    bools), checked all at once."""
    return (_all_of(keys, _SEQUENCE, 5)
            and _INT.issuperset(map(type, chain.from_iterable(keys))))


def _checked(data: Any) -> dict[str, dict[str, Any]]:
    """The verified distributions of a decoded cache body; ValueError/TypeError/KeyError
    when malformed (then the whole file is ignored). Each kind of field is checked for all
    entries at once (`_all_of`), as in `_checked_memo`."""
    if not isinstance(data, dict) or data.get("uid") != os.geteuid():
        raise ValueError("not this user's cache")
    dists = data["dists"]
    if not isinstance(dists, dict):
        raise ValueError("malformed")
    entries = list(dists.values())
    for field, kind in (("record", _STR), ("root", _STR), ("fingerprint", _STR),
                        ("files", _LIST), ("keys", _LIST), ("dirs", _LIST),
                        ("absent", _LIST)):
        if not _all_of(map(itemgetter(field), entries), kind):
            raise ValueError("malformed")
    pairs = list(chain.from_iterable(map(itemgetter("keys"), entries)))
    pairs += chain.from_iterable(map(itemgetter("dirs"), entries))
    rels, keys = (list(map(_FIRST, pairs)), list(map(_SECOND, pairs))) \
        if _all_of(pairs, _SEQUENCE, 2) else (None, None)
    if (rels is None or keys is None or not _all_of(rels, _STR) or not _are_keys(keys)
            or _any_absolute(rels)):
        raise ValueError("malformed")
    record_keys = [entry.get("record_key") for entry in entries]
    if not _keys_or_none(record_keys):
        raise ValueError("malformed")
    strings = chain.from_iterable(chain(e["files"], e["absent"]) for e in entries)
    if not _all_of(strings, _STR):
        raise ValueError("malformed")
    # relative, as remembered: a check's path is the site's prefix + it (`_Compiled`)
    if _any_absolute(list(chain.from_iterable(map(itemgetter("absent"), entries)))):
        raise ValueError("malformed")
    if not _all_of(keys, _TUPLE):  # tuples, as compared with fresh keys (a v3 file has)
        for entry in entries:
            entry["keys"] = [[rel, tuple(key)] for rel, key in entry["keys"]]
            entry["dirs"] = [[rel, tuple(key)] for rel, key in entry["dirs"]]
    for entry, record_key in zip(entries, record_keys, strict=True):
        entry["record_key"] = None if record_key is None else tuple(record_key)
    return dists


def _checked_meta(meta: Any) -> dict[str, dict[str, Any]]:
    """The parsed METADATA of a decoded section; ValueError/TypeError/KeyError when
    malformed."""
    if not isinstance(meta, dict) or not _all_of(meta, _STR):
        raise ValueError("malformed")
    metas = list(meta.values())
    if (not _are_keys(list(map(itemgetter("key"), metas)))
            or not (_STR | _NONE).issuperset(map(type, map(itemgetter("name"), metas)))
            or not (_STR | _NONE).issuperset(map(type, map(itemgetter("version"), metas)))):
        raise ValueError("malformed")
    requires = [r for r in map(itemgetter("requires"), metas) if r is not None]
    if not _all_of(chain.from_iterable(requires), _STR):
        raise ValueError("malformed")
    return meta


_LIST: Final = frozenset({list})
_BYTES: Final = frozenset({bytes})


def _any_absolute(paths: list[str]) -> bool:
    """True when one of `paths` (strings) starts with "/": checked on one string that
    joins them all (a NUL, which no path holds, before each)."""
    return "\0/" in "\0" + "\0".join(paths)


def _open_private(path: Path) -> int | None:
    """An fd of `path` if it is a regular file of this user that no one else can access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
            or st.st_size > _MAX_FILE_BYTES):
        os.close(fd)
        return None
    return fd


def _read_fd(fd: int, size: int = 0) -> bytes:
    """Everything `fd` reads (`size`: what `fstat` said, read in one call), closed after."""
    try:
        chunks = []
        while chunk := os.read(fd, max(size + 1, 1 << 16)):
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def _key(key_path: Path, create: bool) -> bytes | None:
    """The HMAC key (beside the cache file); created (atomically, 0600) when `create`."""
    fd = _open_private(key_path)
    if fd is not None:
        key = _read_fd(fd)
        if len(key) == _KEY_BYTES:
            return key
    if not create:
        return None
    with contextlib.suppress(OSError):
        key_path.unlink()  # missing, foreign or malformed: a new key, the old cache is void
    import secrets  # only where a key is made (never in a sandbox worker: no cache)

    key = secrets.token_bytes(_KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=key_path.parent)
    try:
        os.write(fd, key)
        os.close(fd)
        os.link(tmp, key_path)  # fails if another process created one meanwhile
    except FileExistsError:
        return _key(key_path, create=False)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return key


def _mac(key: bytes, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, _MAGIC + b"\n", hashlib.sha256)
    mac.update(body)
    return mac.hexdigest().encode()


def _read_authenticated(path: Path, key_path: Path | None = None) -> memoryview | None:
    """The body of the cache file `path` once its MAC matched (a view of the bytes read:
    the megabytes of a large cache are not copied), or None."""
    fd = _open_private(path)
    if fd is None:
        return None
    data = _read_fd(fd, os.fstat(fd).st_size)
    end = data.find(b"\n", 0, 256)
    magic, _, mac = data[:max(end, 0)].partition(b" ")
    if end < 0 or magic != _MAGIC:
        return None
    body = memoryview(data)[end + 1:]
    key = _key(key_path or path.with_name(path.name + ".key"), create=False)
    if key is None or not hmac.compare_digest(mac, _mac(key, body)):
        return None
    return body


def _write_authenticated(path: Path, body: bytes, key_path: Path | None = None) -> None:
    from dihya.gate.loader import owned_dir

    if not owned_dir(path.parent, 0o700, 0o022):
        return
    key = _key(key_path or path.with_name(path.name + ".key"), create=True)
    if key is None:
        return
    fd, tmp = tempfile.mkstemp(prefix=".verified-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + b" " + _mac(key, body) + b"\n" + body)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_path(context: str | None = None) -> Path | None:
    """Where this process keeps the cache: `DIHYA_VERIFY_CACHE`, else the user's cache
    directory, in a file named after the context (`finders.context()`: the interpreter,
    `sys.path`, the finder kinds); None for `DIHYA_VERIFY_CACHE=off` (nothing cached, not
    even in memory)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    context = context or finders.context()
    return Path(base) / "dihya" / f"{_PREFIX}{os.geteuid()}-{context}.json"


_PREFIX: Final = "verified-"


def default_key_path(path: Path) -> Path:
    """The HMAC key of the cache file `path`: one per user in the default directory (its
    files of every context share it), else beside the file (`NAME.key`)."""
    uid = os.geteuid()
    if path.name.startswith(f"{_PREFIX}{uid}-") and path.suffix == ".json":
        return path.with_name(f"{_PREFIX}{uid}.key")
    return path.with_name(path.name + ".key")


def _remove_stale(path: Path) -> None:
    """Remove this user's cache files of other contexts not written for `STALE_CONTEXT_S`
    (an interpreter upgraded, a venv gone, another `sys.path`)."""
    uid = os.geteuid()
    if not path.name.startswith(f"{_PREFIX}{uid}-"):
        return
    limit = time.time() - STALE_CONTEXT_S
    with contextlib.suppress(OSError), os.scandir(path.parent) as it:
        for entry in it:
            if (entry.name.startswith(f"{_PREFIX}{uid}-") and entry.name.endswith(".json")
                    and entry.name != path.name):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < limit:
                        os.unlink(entry.path)


_SHARED: tuple[tuple[str, ...], VerifyCache | None] | None = None
_DISABLED = False
_SHARED_LOCK = threading.Lock()


def shared() -> VerifyCache | None:
    """This process's cache (None when disabled), for the location the environment names
    now; a changed `DIHYA_VERIFY_CACHE` or `XDG_CACHE_HOME` starts another one."""
    global _SHARED
    if _DISABLED:
        return None
    where = (os.environ.get(ENV, ""), os.environ.get("XDG_CACHE_HOME", ""),
             os.environ.get("HOME", ""))
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED[0] != where:
            context = finders.context()
            path = default_path(context)
            _SHARED = (where, None if path is None else
                       VerifyCache(path, default_key_path(path), context))
        return _SHARED[1]


def reset() -> None:
    """Drop this process's cache from memory: the next `shared()` reads the file again."""
    global _SHARED
    with _SHARED_LOCK:
        _SHARED = None


def disable() -> None:
    """No cache in this process from now on (a sandbox worker hashes its plugin's bytes)."""
    global _DISABLED
    _DISABLED = True


def save_shared() -> None:
    """Save this process's cache if it has anything new (nothing when it is off)."""
    cache = _SHARED[1] if _SHARED is not None else None
    if cache is not None:
        cache.save()


@contextlib.contextmanager
def saved() -> Iterator[VerifyCache | None]:
    """The shared cache for one gate pass, saved at its end."""
    cache = shared()
    try:
        yield cache
    finally:
        if cache is not None:
            cache.save()
