"""The executor interface and what every executor shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dihya.registry import PluginRecord


class HookTimeout(Exception):
    """The hook did not return within the deadline; its result, if any, is discarded."""


class HookExecutor(Protocol):
    """Calls one hook of one plugin and returns what the plugin returned.

    Raises `HookTimeout` past `timeout_s`, or whatever the hook raised. The caller
    validates the returned value; executors never trust it.
    """

    def call(self, record: PluginRecord, hook: str, args: tuple[Any, ...],
             timeout_s: float) -> Any: ...


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
    """True when `a` and `b` are the same JSON document with the same Python types.

    Stricter than `==` (which says `1 == 1.0 == True`): a value that passes is valid
    wherever the other one is.
    """
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        if len(a) != len(b):
            return False
        for k, v in a.items():
            if type(k) is not str or k not in b:
                return False
            w = b[k]
            if v is not w and not same_json(v, w):
                return False
        return all(type(k) is str for k in b)
    if kind is list:
        return len(a) == len(b) and all(
            v is w or same_json(v, w) for v, w in zip(a, b, strict=True))
    if kind is float:
        return bool(a == b)  # NaN is never the same: it is validated in full
    if kind in _ATOM_TYPES:
        return bool(a == b)
    return False


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"object keys must be strings, not {type(key).__name__}")
