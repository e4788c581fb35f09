"""The executor interface and what every executor shares."""

from __future__ import annotations

import marshal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from dihya.registry import PluginRecord


class HookRaised(Exception):
    """The hook raised in another process; the message is `ExceptionType: message`."""


class HookInvalidOutput(HookRaised):
    """The hook returned, but its value could not be handed back (not JSON data, text that
    is not valid Unicode): the plugin's output is invalid, reported as `invalid-output`."""


#: The error type a sandbox worker reports when the hook's value cannot be sent as JSON.
INVALID_OUTPUT_ERROR: Final = "InvalidOutput"


def is_invalid_output(exc: HookRaised) -> bool:
    """True when `exc` says the hook's value could not be handed back (the sandbox executor
    raises `HookInvalidOutput` for a worker's `InvalidOutput` error, by its type field)."""
    return isinstance(exc, HookInvalidOutput)


class HookTimeout(Exception):
    """The hook did not return within the deadline; its result, if any, is discarded."""


class SandboxViolation(RuntimeError):
    """A sandbox worker died or broke the protocol during a call (it has been killed):
    audited as `hook.sandbox-violation`, not as an ordinary hook failure."""


class HookUnavailable(Exception):
    """The plugin was switched off, removed or replaced after the registry snapshot this
    call comes from was taken: its runner is gone, so the hook is not called (`skipped`)."""


class HookExecutor(Protocol):
    """Calls one hook (or action method) of one plugin and returns what it returned.

    `kwargs` holds every argument of the hook's spec, by name; the implementation gets
    those it takes (`PluginRecord.hook_args`; an action method gets them all). Raises
    `HookTimeout` past `timeout_s`, or whatever the hook raised. The caller validates the
    returned value; executors never trust it.
    """

    def call(self, record: PluginRecord, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any: ...


def arguments_for(record: PluginRecord, hook: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of `kwargs` that `record`'s implementation of `hook` takes."""
    takes = record.hook_args.get(hook)
    if takes is None:
        return dict(kwargs)
    return {name: kwargs[name] for name in takes if name in kwargs}


_ATOMS = (str, int, float, bool, type(None))


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, str, numbers, bool, None), fast.

    Tuples become lists, as they would through JSON; anything else is a TypeError.
    """
    # Exact types first (one `type()` lookup each), subclasses through the general path.
    kind = type(value)
    if kind is dict:
        return {k if type(k) is str else _key(k): v if type(v) in _ATOM_TYPES else json_copy(v)
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _ATOM_TYPES else json_copy(v) for v in value]
    if kind in _ATOM_TYPES:
        return value
    return _json_copy_any(value)


_ATOM_TYPES = frozenset(_ATOMS)


def _json_copy_any(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key(k): json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_copy(v) for v in value]
    if isinstance(value, _ATOMS):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON data")


def same_json(a: Any, b: Any) -> bool:
    """True when `a` and `b` are the same data with exactly the same Python types.

    Stricter than `==` (which says `1 == 1.0 == True` and ignores dict order): compares
    their `marshal` encodings, which record each value's exact type; subclasses and
    objects marshal cannot encode give False. Equal encodings load to equal values, so a
    value that passes validates exactly as the other one does.
    """
    try:
        return marshal.dumps(a) == marshal.dumps(b)
    except (ValueError, TypeError, RecursionError):
        return False


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"object keys must be strings, not {type(key).__name__}")
