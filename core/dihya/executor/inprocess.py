"""Run a hook in the backend's own process: fastest, but with the backend's rights.

Only for plugins whose class says `safe = True` and that an operator approved with
`mode = "in-process"`. Arguments are deep-copied so a plugin cannot change what others
see. A hook cannot be interrupted here: one that overruns its deadline is reported as a
timeout and its result discarded once it returns (the sandbox kills its worker instead).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from dihya.executor.base import HookTimeout, arguments_for, json_copy

if TYPE_CHECKING:
    from dihya.registry import PluginRecord


class InProcessExecutor:
    """Calls hooks directly on the plugin instance held by the registry record."""

    __slots__ = ()
    kind: Final = "in-process"

    def call(self, record: PluginRecord, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        if record.instance is None:
            raise RuntimeError(f"plugin {record.name!r} is not loaded in this process")
        method = getattr(record.instance, hook)
        copies = {k: json_copy(v) for k, v in arguments_for(record, hook, kwargs).items()}
        start = time.perf_counter()
        result = method(**copies)
        elapsed = time.perf_counter() - start
        if elapsed > timeout_s:
            raise HookTimeout(f"{hook} took {elapsed:.3f} s, the limit is {timeout_s} s")
        return result
