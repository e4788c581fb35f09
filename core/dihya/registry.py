"""An immutable snapshot of every discovered plugin and its status; the active ones ordered.

`build_registry` runs the whole chain (discover -> gate -> load -> validate) and returns a
new `RegistrySnapshot`; a reload builds another and swaps the reference, so a generation
runs wholly on the snapshot it started with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from dihya.config import Config, env_disabled
from dihya.discovery import discover
from dihya.gate import ACTIVE, FAILED, REFUSED, Verdict, assess_all
from dihya.loader import Loaded, load_plugins
from dihya.plugin import ActionSpec, GenerationPluginBase

SANDBOX_PENDING = ("sandbox mode is not implemented yet: this plugin runs in the backend "
                   "process with the backend's rights")


@attrs.frozen
class PluginRecord:
    """Everything the core reports about one discovered entry point."""

    name: str
    distribution: str
    version: str
    value: str
    status: str
    reason: str | None
    message: str
    mode: str | None
    fingerprint: str | None
    approved_fingerprint: str | None
    hooks: tuple[str, ...] = ()
    required: bool = False
    roles: tuple[str, ...] | None = None
    safe: bool | None = None
    priority: int | None = None
    description: str | None = None
    author: str | None = None
    isolation: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    actions: Mapping[str, ActionSpec] = attrs.field(factory=dict)
    instance: GenerationPluginBase | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_json(self) -> dict[str, Any]:
        """The fields of `dihya plugins list --json` and the HTTP API."""
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version,
            "status": self.status, "reason": self.reason, "message": self.message,
            "mode": self.mode, "fingerprint": self.fingerprint,
            "approved_fingerprint": self.approved_fingerprint, "hooks": list(self.hooks),
            "required": self.required,
            "roles": list(self.roles) if self.roles is not None else None,
            "safe": self.safe, "priority": self.priority, "entry_point": self.value,
            "description": self.description, "author": self.author,
            "isolation": list(self.isolation), "warnings": list(self.warnings),
            "actions": [a.to_json() for a in self.actions.values()],
        }


@attrs.frozen
class RegistrySnapshot:
    """The plugins as the core sees them at one moment; never changed after it is built."""

    records: tuple[PluginRecord, ...]
    config: Config
    built_at: float
    build_ms: float

    @property
    def active(self) -> tuple[PluginRecord, ...]:
        """Active plugins in call order: priority, then entry-point name."""
        return tuple(sorted((r for r in self.records if r.active),
                            key=lambda r: (r.priority or 0, r.name)))

    def get(self, name: str) -> PluginRecord | None:
        return next((r for r in self.records if r.name == name), None)

    def names(self) -> list[str]:
        return sorted({r.name for r in self.records})


def build_registry(config: Config, environ: Mapping[str, str] | None = None,
                   path: Sequence[str] | None = None,
                   switches: Mapping[str, tuple[str, str]] | None = None) -> RegistrySnapshot:
    """Discover, verify and load: a fresh snapshot for `config`.

    `switches` maps plugin names to a runtime (reason code, message) from the state store
    (`disabled-by-admin`, `quarantined`); such plugins are not imported.
    """
    start = time.perf_counter()
    discovered = discover(config.group, path)
    verdicts = assess_all(discovered, config, env_disabled(environ), path, switches)
    admitted = [v for v in verdicts if v.admitted]
    loaded, failures = load_plugins(config.group, [v.plugin.entry_point for v in admitted])
    records = []
    for verdict in verdicts:
        name = verdict.plugin.name
        if not verdict.admitted:
            records.append(_record(verdict, verdict.status or REFUSED, verdict.reason,
                                   verdict.message))
        elif name in failures:
            failure = failures[name]
            records.append(_record(verdict, FAILED, failure.reason, failure.message))
        else:
            records.append(_loaded_record(verdict, loaded[name]))
    elapsed = (time.perf_counter() - start) * 1000
    return RegistrySnapshot(tuple(records), config, time.time(), elapsed)


def _record(verdict: Verdict, status: str, reason: str | None, message: str,
            **extra: Any) -> PluginRecord:
    p, entry = verdict.plugin, verdict.entry
    return PluginRecord(
        name=p.name, distribution=p.distribution, version=p.version, value=p.value,
        status=status, reason=reason, message=message,
        mode=entry.mode if entry else None, fingerprint=verdict.fingerprint,
        approved_fingerprint=entry.fingerprint if entry else None,
        required=entry.required if entry else False, roles=entry.roles if entry else None,
        **extra,
    )


def _loaded_record(verdict: Verdict, loaded: Loaded) -> PluginRecord:
    cls, entry = loaded.cls, verdict.entry
    meta = {"hooks": loaded.hooks, "safe": cls.safe, "priority": cls.priority,
            "description": cls.description, "author": cls.author, "actions": loaded.actions}
    if entry is not None and entry.mode == "in-process" and not cls.safe:
        return _record(verdict, REFUSED, "unsafe-in-process",
                       f"approved in-process but {cls.__qualname__}.safe is False; approve "
                       "it with --mode sandbox", **meta)
    warnings = (SANDBOX_PENDING,) if entry is not None and entry.mode == "sandbox" else ()
    return _record(verdict, ACTIVE, None, "active", instance=loaded.instance,
                   warnings=warnings, **meta)
