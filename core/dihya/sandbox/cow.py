"""Shared read-only JSON data, and the copy-on-write views in-process hooks get of it.

The pipeline holds the needs, the code and the context of a generation as *frozen* data
(`freeze`): `FrozenDict` and `FrozenList` are a dict and a list whose mutating methods
raise `TypeError`, so one copy can be shared by every hook of the generation and by the
core. An in-process hook does not get that copy itself but a *view* (`view`): a private,
mutable `CowDict` / `CowList` holding the frozen children, each replaced by a view of its
own the first time the hook reads it (copy on write, one level at a time). Changing a view
in place is therefore fine and affects nobody else, as with the deep copies hooks got
before, but a hook that only reads copies nothing below the level it reads. C code that
reads a view without its methods (`json.dumps`, `dict.values(view)`) sees the frozen
children: read-only, never the shared data made writable.

What a hook returns goes through `freeze` again, which shares what it can: a view whose
children are still the frozen ones (a hook that changed nothing, or returned what it was
given) freezes back to the very object it was made from, so the pipeline recognises an
unchanged return by identity, without comparing or validating it; anything else becomes
new frozen data (the hook keeps no reference into it), to be validated.

This is about mistakes, not malice: an in-process plugin runs with the backend's rights
and could write through `dict.__setitem__(frozen, ...)`; the sandbox is for plugins that
are not trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from math import isfinite
from operator import is_
from typing import Any, Final, NoReturn, SupportsIndex

_ATOM_TYPES: Final = frozenset({str, int, float, bool, type(None)})

_READ_ONLY = ("is data the core shares with other hooks and is read-only; change a "
              "copy instead (copy.deepcopy(value), dict(value) or list(value))")


def _read_only(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(f"this {type(self).__name__} {_READ_ONLY}")


class FrozenDict(dict[str, Any]):
    """A dict shared by the hooks of a generation: mutating it raises `TypeError`.
    Made by `freeze` only; its copies (`copy.copy`, `dict(...)`, pickling) are dicts.

    `_plain` is the core's own plain `dict` of the same items (the same objects), made the
    first time a view is (`plain_of`): a `CowDict` is made from an exact `dict` on C's
    fast path, ≈ 40 ns cheaper per view than from this subclass, whose copy looks up and
    binds its `keys` method first (issue #16). Never handed to a hook."""

    __slots__ = ("_plain",)
    _plain: dict[str, Any] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("FrozenDict is made by dihya.sandbox.cow.freeze only")

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        out: dict[str, Any] = thaw(self)
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (dict, (thaw(self),))


class FrozenList(list[Any]):
    """A list shared by the hooks of a generation: mutating it raises `TypeError`.
    Made by `freeze` only; its copies (`copy.copy`, `list(...)`, pickling) are lists."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("FrozenList is made by dihya.sandbox.cow.freeze only")

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: Any) -> list[Any]:
        out: list[Any] = thaw(self)
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (list, (thaw(self),))


for _name in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem",
              "setdefault", "update"):
    setattr(FrozenDict, _name, _read_only)
for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
              "insert", "pop", "remove", "clear", "sort", "reverse"):
    setattr(FrozenList, _name, _read_only)

_FROZEN: Final = (FrozenDict, FrozenList)


class CowDict(dict[str, Any]):
    """A hook's private, mutable view of a `FrozenDict` (`view`): its children become views
    of their own when read, so changing anything reachable through it is private."""

    __slots__ = ("base",)
    base: FrozenDict

    def _own(self, key: Any, value: Any) -> Any:
        kind = type(value)
        if kind is FrozenDict or kind is FrozenList:
            value = view(value)
            dict.__setitem__(self, key, value)
        return value

    def _own_all(self) -> None:
        for key in [k for k, v in dict.items(self) if type(v) in _FROZEN]:
            dict.__setitem__(self, key, view(dict.__getitem__(self, key)))

    def __getitem__(self, key: Any) -> Any:
        return self._own(key, dict.__getitem__(self, key))

    # Defining __iter__ makes CPython's dict(view), {**view}, d.update(view) and f(**view)
    # read through keys() and __getitem__ (their fast path copies the raw slots).
    def __iter__(self) -> Iterator[str]:
        return dict.__iter__(self)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if dict.__contains__(self, key) else default

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        dict.__setitem__(self, key, default)
        return default

    def pop(self, key: Any, *default: Any) -> Any:
        return _view_or_same(dict.pop(self, key, *default))

    def popitem(self) -> tuple[str, Any]:
        key, value = dict.popitem(self)
        return key, _view_or_same(value)

    def values(self) -> Any:
        self._own_all()
        return dict.values(self)

    def items(self) -> Any:
        self._own_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self._own_all()
        return dict(dict.items(self))

    __copy__ = copy

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        out: dict[str, Any] = thaw(self)
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (dict, (thaw(self),))

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        out = self.copy()
        out.update(other)
        return out

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        out = dict(other)
        out.update(self.copy())
        return out


class CowList(list[Any]):
    """A hook's private, mutable view of a `FrozenList` (`view`): its items become views of
    their own when read, so changing anything reachable through it is private."""

    __slots__ = ("base",)
    base: FrozenList

    def _own_all(self) -> None:
        for index, value in enumerate(list.__iter__(self)):
            if type(value) in _FROZEN:
                list.__setitem__(self, index, view(value))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            self._own_all()
            return list(list.__getitem__(self, index))
        value = list.__getitem__(self, index)
        kind = type(value)
        if kind is FrozenDict or kind is FrozenList:
            value = view(value)
            list.__setitem__(self, index, value)
        return value

    def __iter__(self) -> Iterator[Any]:
        self._own_all()
        return list.__iter__(self)

    def __reversed__(self) -> Iterator[Any]:
        self._own_all()
        return list.__reversed__(self)

    def pop(self, index: SupportsIndex = -1) -> Any:
        return _view_or_same(list.pop(self, index))

    def copy(self) -> list[Any]:
        self._own_all()
        return list(list.__iter__(self))

    __copy__ = copy

    def __deepcopy__(self, memo: Any) -> list[Any]:
        out: list[Any] = thaw(self)
        return out

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (list, (thaw(self),))

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, list):
            return NotImplemented
        return self.copy() + list(other)

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, list):
            return NotImplemented
        return list(other) + self.copy()

    def __mul__(self, count: SupportsIndex) -> Any:
        return self.copy() * count

    __rmul__ = __mul__

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        self._own_all()
        list.sort(self, key=key, reverse=reverse)


def plain_of(frozen: FrozenDict) -> dict[str, Any]:
    """`frozen`'s items as a plain `dict` (the same objects), made once and kept with it
    (`FrozenDict._plain`): what a `CowDict` of it is copied from. The core's own: never
    handed to a hook, never changed (a view copies it)."""
    plain = frozen._plain
    if plain is None:
        plain = frozen._plain = dict.copy(frozen)
    return plain


def view(value: Any) -> Any:
    """What a hook gets for `value`: a private view of frozen data (nothing copied below
    its top level until read), an atom as it is, and anything else as a deep copy."""
    kind = type(value)
    if kind is FrozenDict:
        plain = value._plain
        if plain is None:
            plain = value._plain = dict.copy(value)
        out: Any = CowDict(plain)  # from the exact dict: C's fast path (`plain_of`)
    elif kind is FrozenList:
        out = CowList(value)
    elif kind in _ATOM_TYPES:
        return value
    else:  # data the core does not share (an action's payload): a private copy
        return thaw(value)
    out.base = value
    return out


def _view_or_same(value: Any) -> Any:
    return view(value) if type(value) in _FROZEN else value


# `dict`'s own methods, past a view's overrides (method descriptors: `dict.__iter__` is a
# slot wrapper, several times slower to call)
_dict_values: Final = dict.values
_dict_keys: Final = dict.keys


def freeze(value: Any) -> Any:
    """`value` as frozen JSON data, sharing what is already frozen.

    Dicts (string keys only), lists and tuples, str, int, float, bool and None; subclasses
    of them become the plain types; anything else is a `TypeError`. A view whose children
    are still those of the frozen object it was made from gives back that object itself.
    Circular data raises `RecursionError`, NaN and infinities `ValueError` (JSON has
    neither; the sandbox's frames refuse them too). Nothing else is checked: the caller
    validates.
    """
    kind = type(value)
    if kind is CowDict:  # first: what an in-process hook returns most often
        base = value.base
        if (len(value) == len(base)  # `len`: neither class overrides it
                and all(map(is_, _dict_values(value), _dict_values(base)))
                and all(map(is_, _dict_keys(value), _dict_keys(base)))):
            return base
        return _freeze_dict(value, base)
    if kind in _ATOM_TYPES or kind is FrozenDict or kind is FrozenList:
        if kind is float and not isfinite(value):
            raise ValueError("NaN and infinities are not JSON data")
        return value
    if kind is CowList:
        base = value.base
        if (len(value) == len(base)
                and all(map(is_, list.__iter__(value), list.__iter__(base)))):
            return base
        return _freeze_list(value, base)
    if kind is dict:
        return _freeze_dict(value, None)
    if kind is list or kind is tuple:
        return _freeze_list(value, None)
    if isinstance(value, dict):
        return _freeze_dict(value, None)
    if isinstance(value, list | tuple):
        return _freeze_list(value, None)
    for atom in (str, int, float):  # subclasses: the plain value, without their methods
        if isinstance(value, atom):
            return freeze(getattr(atom, f"__{atom.__name__}__")(value))
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _freeze_dict(value: dict[Any, Any], base: FrozenDict | None) -> FrozenDict:
    items = [(k if type(k) is str else _key(k), freeze(v)) for k, v in dict.items(value)]
    if (base is not None and len(items) == len(base)
            and all(k is bk and v is bv for (k, v), (bk, bv) in zip(items, dict.items(base),
                                                                      strict=True))):
        return base  # a hook that read (and so viewed) children without changing them
    out = dict.__new__(FrozenDict)
    dict.update(out, items)
    out._plain = None
    return out


def _freeze_list(value: list[Any] | tuple[Any, ...], base: FrozenList | None) -> FrozenList:
    items = [freeze(v) for v in (list.__iter__(value) if isinstance(value, list) else value)]
    if (base is not None and len(items) == len(base)
            and all(map(is_, items, list.__iter__(base)))):
        return base
    out = list.__new__(FrozenList)
    list.extend(out, items)
    return out


def frozen_dict(items: dict[str, Any]) -> FrozenDict:
    """A `FrozenDict` of `items`, whose keys are `str` and whose values are already frozen
    data or JSON atoms (not checked: for the core's own data, built frozen without the
    walk `freeze` makes)."""
    out = dict.__new__(FrozenDict)
    dict.update(out, items)
    out._plain = None
    return out


def frozen_list(items: list[Any]) -> FrozenList:
    """A `FrozenList` of `items`, already frozen data or JSON atoms (see `frozen_dict`)."""
    out = list.__new__(FrozenList)
    list.extend(out, items)
    return out


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    raise TypeError(f"object keys must be strings, not {type(key).__name__}")


def thaw(value: Any) -> Any:
    """A plain deep copy of JSON data (frozen, viewed or plain): dicts and lists that
    share nothing with `value`; tuples become lists; anything else is a `TypeError`."""
    kind = type(value)
    if kind in _ATOM_TYPES:
        return value
    if isinstance(value, dict):
        return {k if type(k) is str else _key(k): v if type(v) in _ATOM_TYPES else thaw(v)
                for k, v in dict.items(value)}
    if isinstance(value, list):
        return [v if type(v) in _ATOM_TYPES else thaw(v) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, str | int | float):  # bool is an int
        return value
    raise TypeError(f"{type(value).__name__} is not JSON data")
