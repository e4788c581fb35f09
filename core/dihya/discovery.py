"""List the entry points of the plugin group and their distributions, importing nothing.

Uses `importlib.metadata` directly, never stevedore's listing: stevedore caches entry
points in a class dict, a per-process dict and a JSON file keyed on mtimes rounded to
128 s, which can hide a new plugin or hand back a stale target.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
from packaging.utils import canonicalize_name

DEFAULT_GROUP: Final = "dihya.generation_plugins"


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
    for dist in md.distributions(path=search):
        key = _normalized_name(dist)
        if key is None or key in seen:
            continue
        seen.add(key)
        eps = dist.entry_points.select(group=group)
        if not eps:
            continue
        meta = dist.metadata
        dist_info = _dist_info_dir(dist)
        editable = _is_editable(dist)
        for ep in eps:
            found.append(
                DiscoveredPlugin(
                    name=ep.name,
                    value=ep.value,
                    group=group,
                    distribution=meta["Name"],
                    version=meta["Version"],
                    dist_info=dist_info,
                    editable=editable,
                    entry_point=ep,
                )
            )
    found.sort(key=lambda p: (p.name, p.distribution))
    return found


def _normalized_name(dist: md.Distribution) -> str | None:
    # The dist-info directory's name gives the name without parsing METADATA.
    fast = getattr(dist, "_normalized_name", None)
    if isinstance(fast, str) and fast:
        return canonicalize_name(fast)
    name = dist.metadata["Name"]
    return canonicalize_name(name) if name else None


def _dist_info_dir(dist: md.Distribution) -> Path | None:
    # PathDistribution keeps its directory in `_path`; other finders have no files.
    path = getattr(dist, "_path", None)
    return Path(path) if path is not None else None


def _is_editable(dist: md.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable", False))
    except (ValueError, AttributeError):
        return False
