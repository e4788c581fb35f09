"""Plugins' own log records: captured per call (`capture`), redacted (`redact`), bounded and
collected per generation (`collect`).

A plugin logs through `self.logger` (`dihya.plugin.<entry-point name>`). In-process, a
handler collects the records of each hook or action call; in a sandbox worker the same
handler collects them and the worker sends them with the call's answer (`"logs"` on the
answer frame). Either way the executor hands them to the collector of the generation (or
action) under way, which redacts every string of the needs (and anything that looks like
an e-mail address, a phone number or a token), applies the caps and gives the records to
the face that stores them (`dihya.store.pluginlogs`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dihya.pluginlog.capture import (
    LOGGER_ROOT,
    begin_call,
    capture_call,
    end_call,
    install,
    loading,
    logger_for,
)

if TYPE_CHECKING:
    from dihya.pluginlog.collect import (
        Collector,
        LogLimits,
        PluginLogRecord,
        collecting,
        deliver,
    )
    from dihya.pluginlog.redact import Redactor

__all__ = ["LOGGER_ROOT", "Collector", "LogLimits", "PluginLogRecord", "Redactor",
           "begin_call", "capture_call", "collecting", "deliver", "end_call", "install", "loading",
           "logger_for"]

# A sandbox worker needs only `capture`: the rest is imported on first use, so a worker
# starts as fast as before.
_LAZY = {"Collector": "collect", "LogLimits": "collect", "PluginLogRecord": "collect",
         "collecting": "collect", "deliver": "collect", "Redactor": "redact"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"dihya.pluginlog.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dihya.pluginlog' has no attribute {name!r}")
