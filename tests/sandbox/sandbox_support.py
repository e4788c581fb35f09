"""Helpers for sandbox tests: real plugins installed from wheels, approved in sandbox mode."""

from __future__ import annotations

from typing import Any

import attrs

from dihya.registry import RegistrySnapshot, build_registry
from support.wheels import plugin_source


def sandboxed(plugin_site: Any, bodies: dict[str, str], timeout: float = 2.0,
              **settings: Any) -> tuple[RegistrySnapshot, dict[str, str]]:
    names = {}
    for key, body in bodies.items():
        name = plugin_site.unique(key)
        names[key] = name
        source = body if body.startswith("#!full\n") else plugin_source(name, body=body)
        plugin_site.install(name, source=source.replace("#!full\n", "").replace("NAME", name))
    config = plugin_site.config(*(plugin_site.entry(n, mode="sandbox") for n in names.values()),
                                timeout=timeout)
    if settings:
        config = attrs.evolve(config, sandbox=attrs.evolve(config.sandbox, **settings))
    snapshot = build_registry(config, path=plugin_site.path)
    return snapshot, names


def hook(body: str, name: str = "after_generation") -> str:
    args = "self, needs" if name == "before_generation" else "self, code, needs"
    return f"\ndef {name}({args}):\n" + "".join(
        f"    {line}\n" for line in body.splitlines())


def statuses(result: Any) -> dict[str, str]:
    return {h.name: h.status for h in result.plugins}
