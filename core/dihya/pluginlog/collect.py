"""The plugin log records of one generation (or one action call): taken from the executors,
redacted with the needs that generation saw, bounded per plugin, handed to the face that
stores them.

What an executor delivers is untrusted (a sandbox worker sends it): every field is checked
and coerced here. Caps (`LogLimits`): at most `records` records per plugin per generation,
the rest counted and said in one last record of that plugin; a record's format string and
arguments cut to `record_bytes` (UTF-8) once redacted, the bytes cut counted on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

from dihya.pluginlog.redact import Redactor, needs_strings

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_NUMBERS: Final = {name: logging.getLevelName(name) for name in LEVELS}
#: The format string of the record that says how many records a cap dropped.
DROPPED_TEMPLATE: Final = ("%d more log records of this plugin were dropped: the cap is %d "
                           "records per generation")


@attrs.frozen
class LogLimits:
    """Per-plugin caps (`[plugins] log_records`, `[plugins] log_record_bytes`)."""

    records: int = 200
    record_bytes: int = 2000


@attrs.frozen
class PluginLogRecord:
    """One stored record: the format string and its (redacted) arguments kept apart."""

    at: float
    plugin: str
    version: str | None
    request_id: str | None
    level: str
    template: str
    args: list[Any] | dict[str, Any]
    error: str | None = None
    cut_bytes: int = 0  # bytes over `record_bytes`, cut off and not stored

    @property
    def message(self) -> str:
        """The format string with its arguments, as `logging` would print it (or the
        format string and the arguments side by side when they do not fit)."""
        try:
            text = self.template % (self.args if isinstance(self.args, dict)
                                    else tuple(self.args)) if self.args else self.template
        except (TypeError, ValueError, KeyError):
            text = f"{self.template} {self.args}"
        if self.error:
            text += f" [{self.error}]"
        return text

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "message": self.message}


def _coerce(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _size(texts: list[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


class Collector:
    """The records of one generation, by plugin, raw until `finish` redacts them."""

    def __init__(self, request_id: str | None, needs: Any, limits: LogLimits) -> None:
        self.request_id = request_id
        self.limits = limits
        # the needs' strings, gathered when a plugin first logs: most generations log
        # nothing and need none (the needs are never changed in place: the pipeline
        # freezes a copy of them)
        self._needs = needs
        self._strings: set[str] | None = None
        self._seen: set[int] = set()
        self._raw: list[tuple[str, str | None, dict[str, Any]]] = []
        self._counts: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._versions: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def add(self, plugin: str, version: str | None, batch: Any,
            kwargs: Mapping[str, Any]) -> None:
        """Take what a call of `plugin` logged (`{"records": [...], "dropped": n}`)."""
        if not isinstance(batch, dict):
            return
        records = batch.get("records")
        dropped = batch.get("dropped")
        with self._lock:
            if self._strings is None:
                self._strings = needs_strings(self._needs)
            for key in ("needs", "payload"):  # what the plugin was given: what it may leak
                given = kwargs.get(key)
                if given is not None and id(given) not in self._seen:
                    self._seen.add(id(given))
                    needs_strings(given, self._strings)
            self._versions[plugin] = version
            extra = dropped if isinstance(dropped, int) and dropped > 0 else 0
            for wire in records if isinstance(records, list) else ():
                if self._counts.get(plugin, 0) >= self.limits.records or not isinstance(
                        wire, dict):
                    extra += 1
                    continue
                self._counts[plugin] = self._counts.get(plugin, 0) + 1
                self._raw.append((plugin, version, wire))
            if extra:
                self._dropped[plugin] = self._dropped.get(plugin, 0) + extra

    def finish(self) -> list[PluginLogRecord]:
        """The records, redacted and cut to size, oldest first per plugin, each plugin's
        count of dropped records last."""
        with self._lock:
            if not self._raw and not self._dropped:
                return []  # nothing logged (the common case): no redactor to build
            if self._strings is None:  # only dropped records can come without `add`
                self._strings = needs_strings(self._needs)
            redactor = Redactor(self._strings)
            out = [self._record(redactor, plugin, version, wire)
                   for plugin, version, wire in self._raw]
            now = time.time()
            for plugin, count in sorted(self._dropped.items()):
                out.append(PluginLogRecord(now, plugin, self._versions.get(plugin),
                                           self.request_id, "WARNING", DROPPED_TEMPLATE,
                                           [count, self.limits.records]))
            self._raw.clear()
            self._dropped.clear()
        return out

    def _record(self, redactor: Redactor, plugin: str, version: str | None,
                wire: dict[str, Any]) -> PluginLogRecord:
        at = wire.get("at")
        level = wire.get("level")
        error = wire.get("error")
        raw_args = wire.get("args")
        args: list[Any] | dict[str, Any]
        if isinstance(raw_args, dict):
            args = {str(k): _coerce(v) for k, v in raw_args.items()}
        elif isinstance(raw_args, list):
            args = [_coerce(v) for v in raw_args]
        else:
            args = []
        template = redactor.text(str(_coerce(wire.get("msg"))))
        args = redactor.args(args)
        template, args, cut = self._bounded(template, args)
        return PluginLogRecord(
            at=float(at) if isinstance(at, int | float) and not isinstance(at, bool)
            else time.time(),
            plugin=plugin, version=version, request_id=self.request_id,
            level=level if level in LEVEL_NUMBERS else "WARNING",
            template=template, args=args,
            error=redactor.text(error)[:100] if isinstance(error, str) else None,
            cut_bytes=cut)

    def _bounded(self, template: str, args: list[Any] | dict[str, Any]
                 ) -> tuple[str, list[Any] | dict[str, Any], int]:
        """Cut the format string to half the cap and the string arguments to equal shares
        of what is left (applied after redaction: a cut never hides a personal value)."""
        values = list(args.values()) if isinstance(args, dict) else list(args)
        texts = [v for v in values if isinstance(v, str)]
        before = _size([template, *texts])
        limit = self.limits.record_bytes
        if before <= limit:
            return template, args, 0
        template = _cut(template, limit // 2)
        share = (limit - len(template.encode("utf-8"))) // max(1, len(texts))
        if isinstance(args, dict):
            args = {k: _cut(v, share) if isinstance(v, str) else v for k, v in args.items()}
            texts = [v for v in args.values() if isinstance(v, str)]
        else:
            args = [_cut(v, share) if isinstance(v, str) else v for v in args]
            texts = [v for v in args if isinstance(v, str)]
        return template, args, before - _size([template, *texts])


_COLLECTOR: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "dihya_plugin_log_collector", default=None)


@contextlib.contextmanager
def collecting(request_id: str | None, needs: Any,
               limits: LogLimits | None = None) -> Iterator[Collector]:
    """Collect the plugin log records of the calls made in this block (in this context),
    redacted with `needs` and with the needs and payloads the calls are given."""
    collector = Collector(request_id, needs, limits or LogLimits())
    token = _COLLECTOR.set(collector)
    try:
        yield collector
    finally:
        _COLLECTOR.reset(token)


def deliver(target: Any, batch: Any, kwargs: Mapping[str, Any]) -> None:
    """Give what a call of `target` (a registry record) logged to the collector under way;
    dropped when nothing collects (a generation run by `dihya.testing`, say)."""
    collector = _COLLECTOR.get()
    if collector is not None and batch:
        collector.add(str(target.name), getattr(target, "version", None), batch, kwargs)
