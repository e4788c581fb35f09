"""Frozen data and copy-on-write views (dihya.sandbox.cow), directly."""

from __future__ import annotations

import copy
import enum
import json
import pickle

import pytest

from dihya.sandbox.cow import (
    CowDict,
    CowList,
    FrozenDict,
    FrozenList,
    freeze,
    frozen_dict,
    plain_of,
    thaw,
    view,
)

DATA = {"a": [1, {"b": [2, 3]}], "c": {"d": "e"}, "f": 1.5, "g": None, "h": True}


def test_frozen_data_refuses_every_change() -> None:
    frozen = freeze(DATA)
    assert frozen == DATA and type(frozen) is FrozenDict
    assert type(frozen["a"]) is FrozenList and type(frozen["a"][1]) is FrozenDict
    for change in (lambda: frozen.__setitem__("x", 1), lambda: frozen.pop("a"),
                   lambda: frozen.update(x=1), lambda: frozen.clear(),
                   lambda: frozen.setdefault("x", 1), lambda: frozen.popitem(),
                   lambda: frozen.__delitem__("a"), lambda: frozen["a"].append(1),
                   lambda: frozen["a"].extend([1]), lambda: frozen["a"].sort(),
                   lambda: frozen["a"].reverse(), lambda: frozen["a"].__setitem__(0, 2),
                   lambda: frozen["a"].insert(0, 1), lambda: frozen["a"][1]["b"].clear(),
                   lambda: frozen["a"].remove(1), lambda: frozen["a"].__delitem__(0)):
        with pytest.raises(TypeError, match="read-only"):
            change()
    with pytest.raises(TypeError, match="freeze only"):
        FrozenDict({"x": []})
    with pytest.raises(TypeError, match="freeze only"):
        FrozenList([[]])
    assert frozen == DATA


def test_copies_of_frozen_data_are_plain_and_writable() -> None:
    frozen = freeze(DATA)
    for copied in (copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen)), thaw(frozen)):
        assert copied == DATA and type(copied) is dict and type(copied["a"]) is list
        copied["a"][1]["b"].append(4)
    assert frozen == DATA
    assert json.loads(json.dumps(frozen)) == DATA


def test_a_view_is_private_at_every_level() -> None:
    frozen = freeze(DATA)
    mine = view(frozen)
    assert type(mine) is CowDict and mine == DATA
    mine["a"][1]["b"].append(4)
    mine["c"]["x"] = 1
    mine["a"].append("z")
    del mine["f"]
    assert frozen == DATA, "a view's change reached the shared data"
    other = view(frozen)
    assert other == DATA, "a view's change reached another view"
    assert json.loads(json.dumps(mine))["a"][1]["b"] == [2, 3, 4]


def test_freeze_gives_back_the_original_when_nothing_changed() -> None:
    frozen = freeze(DATA)
    assert freeze(frozen) is frozen
    mine = view(frozen)
    assert freeze(mine) is frozen
    _ = mine["a"][1]["b"][0], list(mine.items()), mine.get("c")  # reads make views
    assert type(dict.__getitem__(mine, "a")) is CowList
    assert freeze(mine) is frozen, "reading is not changing"
    mine["a"][1]["b"][0] = 2  # the same value, the same object: no change
    assert freeze(mine) is frozen
    mine["a"][1]["b"][0] = 2.0  # equal but another type: a change
    changed = freeze(mine)
    assert changed is not frozen and changed["a"][1]["b"][0] == 2.0
    assert changed["c"] is frozen["c"], "unchanged parts are shared"


def test_freeze_makes_plain_types_and_refuses_what_is_not_json() -> None:
    class Text(str):
        def upper(self) -> str:
            return "hijacked"

    class Number(enum.IntEnum):
        ONE = 1

    frozen = freeze({"t": Text("x"), "n": Number.ONE, "tuple": (1, [2])})
    assert type(frozen["t"]) is str and frozen["t"].upper() == "X"
    assert type(frozen["n"]) is int and type(frozen["tuple"]) is FrozenList
    for bad, error in (({1, 2}, TypeError), ({"a": b"x"}, TypeError), ({1: "x"}, TypeError),
                       ({"a": float("nan")}, ValueError), ([float("inf")], ValueError),
                       ({"a": object()}, TypeError)):
        with pytest.raises(error):
            freeze(bad)
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(RecursionError):
        freeze(circular)


def test_a_returned_plain_value_is_copied() -> None:
    mine = {"a": [1]}
    frozen = freeze(mine)
    mine["a"].append(2)
    assert frozen == {"a": [1]}


def test_the_plain_copy_views_are_made_from_is_the_cores_own_and_stays_as_it_was() -> None:
    # issue #16: a `FrozenDict` keeps a plain dict of its items (`_plain`, `plain_of`), the
    # exact dict a view is copied from (C's fast path); a view must never be that dict, and
    # nothing done to a view (through its methods or past them) may reach it
    frozen = freeze(DATA)
    assert frozen._plain is None  # made when a view first is
    assert frozen_dict({"x": 1})._plain is None
    mine = view(frozen)
    plain = frozen._plain
    assert type(plain) is dict and plain is not mine and list(plain) == list(frozen)
    assert all(plain[k] is frozen[k] for k in frozen)
    assert plain_of(frozen) is plain
    child = mine["c"]  # a child's view is made from the child's own plain copy
    assert type(child) is CowDict and frozen["c"]._plain is not None
    assert child is not frozen["c"]._plain
    child["x"] = 1
    mine["z"] = 1
    dict.__setitem__(mine, "f", 2.5)  # past the view's methods
    dict.update(mine, {"g": 0})
    dict.pop(mine, "h")
    dict.__setitem__(child, "d", "changed")
    assert frozen._plain is plain and plain == DATA and all(plain[k] is frozen[k] for k in frozen)
    assert frozen["c"]._plain == {"d": "e"} and frozen == DATA
    dict.clear(mine)
    assert plain == DATA
    assert view(frozen) == DATA and view(frozen) is not plain
    # freezing a view made from the plain copy still knows it by its frozen base
    assert freeze(view(frozen)) is frozen
    # its copies stay plain data, whatever the slot holds
    for copied in (copy.copy(frozen), copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        assert copied == DATA and type(copied) is dict and copied is not plain
