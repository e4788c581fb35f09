"""List the entry points of the plugin group and their distributions, importing nothing.

Uses `importlib.metadata` directly, never stevedore's listing: stevedore caches entry
points in a class dict, a per-process dict and a JSON file keyed on mtimes rounded to
128 s, which can hide a new plugin or hand back a stale target.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dihya.gate import pathmemo, verifycache
from dihya.gate.verifycache import Metadata
from dihya.plugin import DEFAULT_GROUP


@attrs.frozen
class DiscoveredPlugin:
    """An entry point of the plugin group and the distribution that declares it."""

    name: str
    value: str
    group: str
    distribution: str
    version: str
    dist_info: Path | None
    editable: bool
    entry_point: md.EntryPoint = attrs.field(eq=False, repr=False)

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    @property
    def site_packages(self) -> Path | None:
        return self.dist_info.parent if self.dist_info else None


def discover(
    group: str = DEFAULT_GROUP, path: Sequence[str] | None = None
) -> list[DiscoveredPlugin]:
    """Every entry point of `group` on `path` (default `sys.path`), sorted by name.

    A distribution installed twice on the path counts once: the first one, as the
    import system would see it. Nothing is imported.
    """
    importlib.invalidate_caches()
    search = list(sys.path if path is None else path)
    seen: set[str] = set()
    found: list[DiscoveredPlugin] = []
    cache = verifycache.shared()
    with pathmemo.one_pass():
        for where, key in _metadata_dirs(search):
            if key in seen:
                continue
            seen.add(key)
            found.extend(_plugins_of(where, group, cache))
    found.sort(key=lambda p: (p.name, p.distribution))
    return found


def _plugins_of(where: str, group: str,
                cache: verifycache.VerifyCache | None) -> list[DiscoveredPlugin]:
    """The entry points of `group` that the distribution in the directory `where` declares:
    remembered while its `entry_points.txt`, METADATA and `direct_url.json` are unchanged.
    A `Path` and a `Distribution` are made only for a distribution that declares some."""

    def compute() -> tuple[list[DiscoveredPlugin], list[pathmemo.Check]]:
        listing = os.path.join(where, "entry_points.txt")
        checks = list(pathmemo.checks([listing]))
        if checks[0][1] is None:
            checks += pathmemo.checks([where])  # absent: its creation changes the directory
        if group not in (_read(where, "entry_points.txt") or ""):
            return [], checks  # most distributions: one read, no parsing, no Distribution
        dist_info = Path(where)
        dist = md.PathDistribution(dist_info)
        eps = _group_entry_points(dist, group)
        if not eps:
            return [], checks
        marker = pathmemo.checks([os.path.join(where, "METADATA"),
                                  os.path.join(where, "direct_url.json")])
        checks += [c for c in marker if c[1] is not None]
        if any(c[1] is None for c in marker) and all(c[0] != where for c in checks):
            checks += pathmemo.checks([where])  # an absent file: created in the directory
        meta = _metadata(dist, dist_info, cache)
        _METADATA[dist] = meta
        editable = _is_editable(dist_info)
        return [DiscoveredPlugin(
                    name=ep.name,
                    value=ep.value,
                    group=group,
                    distribution=meta.name,  # type: ignore[arg-type]
                    version=meta.version,  # type: ignore[arg-type]
                    dist_info=dist_info,
                    editable=editable,
                    entry_point=ep,
                ) for ep in eps], checks

    return list(pathmemo.memoized("discovery.dist", (where, group), compute))


def plugin_at(dist_info: Path, name: str, group: str = DEFAULT_GROUP) -> DiscoveredPlugin | None:
    """The entry point `name` of `group` declared by the distribution in `dist_info` (a
    `*.dist-info` directory), or None: what `discover` would say of that one distribution,
    reading nothing else (a sandbox worker told which distribution to load)."""
    if not dist_info.name.endswith(_SUFFIXES) or not dist_info.is_dir():
        return None
    dist = md.PathDistribution(dist_info)
    eps = [ep for ep in _group_entry_points(dist, group) if ep.name == name]
    if len(eps) != 1:
        return None
    meta = _metadata(dist, dist_info)
    _METADATA[dist] = meta
    return DiscoveredPlugin(name=name, value=eps[0].value, group=group,
                            distribution=meta.name,  # type: ignore[arg-type]
                            version=meta.version,  # type: ignore[arg-type]
                            dist_info=dist_info, editable=_is_editable(dist_info),
                            entry_point=eps[0])


# The METADATA that `discover` parsed for each plugin's distribution, so the gate reads its
# requirements from the same parse instead of reading and parsing the file again.
_METADATA: weakref.WeakKeyDictionary[md.Distribution, Metadata] = weakref.WeakKeyDictionary()


def _metadata(dist: md.PathDistribution, dist_info: Path,
              cache: verifycache.VerifyCache | bool | None = True) -> Metadata:
    """Name, version and requirements of `dist`: from the verification cache when its
    METADATA file is unchanged (`dihya.gate.verifycache`), else parsed."""
    if cache is True:
        cache = verifycache.shared()
    if isinstance(cache, verifycache.VerifyCache):
        return cache.metadata(dist_info, lambda: dist.metadata)
    meta = dist.metadata
    reqs = meta.get_all("Requires-Dist")
    return Metadata(meta["Name"], meta["Version"], tuple(reqs) if reqs else None)


def requires_of(dist: md.Distribution) -> list[str] | None:
    """`dist.requires`, from the METADATA parsed by `discover` when there is one."""
    meta = _METADATA.get(dist)
    if meta is not None and meta.requires:
        return list(meta.requires)
    requires: list[str] | None = dist.requires
    return requires


def _metadata_dirs(search: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Each `*.dist-info` / `*.egg-info` directory (its path, a string) of the directories
    on `search`, in path order, with the distribution's normalized name read from the
    directory's name (PEP 427/376: `NAME-VERSION.dist-info`), so no METADATA is parsed to
    tell duplicates apart.
    What `importlib.metadata.distributions(path=...)` finds, through public API only;
    entries that are not directories (zip files) hold no plugin the gate could verify."""
    for entry in search:
        yield from _listing(entry or ".")


def _listing(entry: str) -> tuple[tuple[str, str], ...]:
    """The `*.dist-info` / `*.egg-info` directories in `entry`, sorted, with their
    distributions' normalized names; remembered while the directory is unchanged (adding,
    removing or renaming one changes its ctime)."""

    def compute() -> tuple[tuple[tuple[str, str], ...], list[pathmemo.Check]]:
        # here, not at the top: `packaging.utils` imports `packaging.tags` (subprocess,
        # sysconfig...), which a sandbox worker, verifying its one plugin, never needs
        from packaging.utils import canonicalize_name

        checks = list(pathmemo.path_checks([entry]))
        try:
            with os.scandir(entry) as it:
                names = sorted(e.name for e in it if e.name.endswith(_SUFFIXES)
                               and e.is_dir())
        except OSError:  # not a directory, gone, unreadable
            names = []
        # the paths `Path(entry) / name` gives, one `Path` per path entry, not per name
        base = os.fspath(Path(entry))
        prefix = "" if base == "." else base if base.endswith("/") else base + "/"
        found = tuple((prefix + name,
                       canonicalize_name(name.rpartition(".")[0].partition("-")[0]))
                      for name in names)
        return found, checks

    relative = None if os.path.isabs(entry) else pathmemo.cwd()
    return pathmemo.memoized("discovery.listing", (entry, relative), compute)


_SUFFIXES: Final = (".dist-info", ".egg-info")


# -- across processes (`pathmemo.persist`): what the memo of discovery writes --------------


def _encode_plugins(plugins: list[DiscoveredPlugin]) -> tuple[Any, ...]:
    out = []
    for p in plugins:
        meta = _METADATA.get(p.entry_point.dist) if p.entry_point.dist is not None else None
        out.append((p.name, p.value, p.group, p.distribution, p.version,
                    None if p.dist_info is None else os.fspath(p.dist_info), p.editable,
                    None if meta is None else (meta.name, meta.version, meta.requires)))
    return tuple(out)


def _decode_plugins(data: tuple[Any, ...]) -> list[DiscoveredPlugin]:
    """The plugins of one distribution as `_plugins_of` found them, their entry points
    bound to a `PathDistribution` of the same directory (as `select` binds them), its
    parsed METADATA remembered for `requires_of`."""
    found = []
    dists: dict[str, md.PathDistribution] = {}
    for name, value, group, distribution, version, where, editable, meta in data:
        # exact types (what `marshal` reads has no subclasses): one C-level test
        if not _STRINGS.issuperset(map(type, (name, value, group, distribution, version,
                                               where))):
            raise ValueError("malformed")
        dist_info = Path(where)
        dist = dists.get(where)
        if dist is None:
            dist = dists[where] = md.PathDistribution(dist_info)
            if meta is not None:
                _METADATA[dist] = Metadata(meta[0], meta[1],
                                           None if meta[2] is None else tuple(meta[2]))
        ep = _bound(md.EntryPoint(name=name, value=value, group=group), dist)
        found.append(DiscoveredPlugin(name=name, value=value, group=group,
                                      distribution=distribution, version=version,
                                      dist_info=dist_info, editable=bool(editable),
                                      entry_point=ep))
    return found


_STRINGS: Final = frozenset({str})


def _checked_listing(data: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
    """A persisted listing as `_listing` makes it: pairs of strings."""
    if type(data) is not tuple or not all(
            type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str
            and type(pair[1]) is str for pair in data):
        raise ValueError("malformed")
    return data


def _bound(ep: md.EntryPoint, dist: md.PathDistribution) -> md.EntryPoint:
    """`ep` with `ep.dist` set to `dist`, as `Distribution.entry_points` makes them."""
    bind = getattr(ep, "_for", None)
    if bind is not None:
        return bind(dist)  # type: ignore[no-any-return]
    match = [e for e in dist.entry_points if e.name == ep.name and e.group == ep.group]
    if len(match) != 1 or match[0].value != ep.value:
        raise ValueError("entry point not found again")
    return match[0]


pathmemo.persist("discovery.dist", _encode_plugins, _decode_plugins)
pathmemo.persist("discovery.listing", decode=_checked_listing)
pathmemo.persist("links")


def _group_entry_points(dist: md.Distribution, group: str) -> md.EntryPoints:
    # Most distributions declare no entry point of the group: a section named `group` can
    # only exist where the text contains it, so only those are parsed (by the public API).
    text = dist.read_text("entry_points.txt")
    if not text or group not in text:
        return md.EntryPoints(())
    return dist.entry_points.select(group=group)


def _read(dist_info: str | Path, name: str) -> str | None:
    """`PathDistribution(dist_info).read_text(name)`, without the pathlib objects."""
    try:
        with open(os.path.join(dist_info, name), encoding="utf-8") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def _is_editable(dist_info: Path) -> bool:
    text = _read(dist_info, "direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable", False))
    except (ValueError, AttributeError):
        return False
