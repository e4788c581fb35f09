"""The canonical JSON is `json.dumps(sort_keys, compact, ensure_ascii=False, allow_nan=False)`
to the byte, and fails where that fails, whichever encoder computed it (msgspec's fast
path or the standard library); `sorted_json` is `json.dumps(sort_keys, compact)`."""

from __future__ import annotations

import collections
import enum
import json
import math
import random
import struct
from typing import Any

import pytest

from dihya.canonical import (
    canonical_bytes,
    canonical_sha256,
    canonical_text,
    indented_json,
    sorted_json,
)
from dihya.sandbox.cow import freeze, view


def reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def same(value: Any) -> None:
    expected = reference(value)
    assert canonical_text(value) == expected
    assert canonical_bytes(value) == expected.encode("utf-8")
    for ascii_only in (True, False):
        assert sorted_json(value, ensure_ascii=ascii_only) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)


def same_error(value: Any) -> None:
    with pytest.raises(Exception) as expected:
        reference(value).encode("utf-8")
    with pytest.raises(expected.type):
        canonical_bytes(value)


def test_every_code_point_as_a_value_and_as_a_key() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    same(text)
    same({text: text})
    same({chr(c): c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and c % 7 == 0})


def test_keys_sort_by_code_point() -> None:
    rng = random.Random(16)
    pool = [chr(c) for c in (0x0, 0x1F, 0x20, 0x41, 0x61, 0x7F, 0x80, 0xE9, 0x7FF, 0x800,
                              0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF)]
    for _ in range(3000):
        same({"".join(rng.choices(pool, k=rng.randint(0, 4))): n
              for n in range(rng.randint(0, 8))})


def test_floats() -> None:
    rng = random.Random(16)
    special = [0.0, -0.0, 0.1, 1.0, 1e-4, 1e-5, 1e-7, 0.00010000000000000002, 1e15, 1e16,
               9999999999999998.0, 1e21, 1e22, 1e300, 5e-324, 2.2250738585072014e-308,
               1.7976931348623157e308, 1733131200.123456, 123456789012345.67]
    values = special + [-v for v in special]
    for _ in range(30000):
        values.append(struct.unpack("d", rng.randbytes(8))[0])
        values.append(rng.uniform(-1e16, 1e16))
        values.append(10 ** rng.uniform(-5, 17))
        values.append(round(rng.uniform(0, 2e9), rng.randint(0, 9)))
    values = [v for v in values if math.isfinite(v)]
    same(values)
    same({str(i): v for i, v in enumerate(values[:5000])})
    for v in values[:3000]:
        same(v)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, math.nan],
                                   {"a": {"b": -math.inf}}])
def test_nan_and_infinities_fail_as_before(value: Any) -> None:
    same_error(value)
    assert sorted_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_ints() -> None:
    for v in (0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64,
              -(2**200), 10**400, True, False):
        same(v)
        same({"v": [v]})


def test_an_int_too_long_to_print_fails_as_before() -> None:
    same_error(10**5000)


def test_nested_random_data() -> None:
    rng = random.Random(16)
    atoms: list[Any] = [None, True, False, 0, -7, 2**70, 1.5, 1e-9, 12.5e30, "", "é",
                        "\u2028\x7f\x00\"\\", "😀", "a" * 100]

    def make(depth: int) -> Any:
        roll = rng.random()
        if depth > 5 or roll < 0.4:
            return rng.choice(atoms)
        if roll < 0.7:
            return [make(depth + 1) for _ in range(rng.randint(0, 5))]
        if roll < 0.8:
            return tuple(make(depth + 1) for _ in range(rng.randint(0, 3)))
        return {rng.choice(["a", "B", "é", "😀", "", "z1", "\x00"]) + str(rng.randint(0, 9)):
                make(depth + 1) for _ in range(rng.randint(0, 6))}

    for _ in range(3000):
        same(make(0))


def test_frozen_data_and_views() -> None:
    data = freeze({"b": [1, {"y": 2.5, "x": ["é", 1e20]}], "a": "z", "c": None})
    same(data)
    mine = view(data)
    mine["b"][1]["x"].append(4)
    mine["d"] = (1, 2)
    same(mine)


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Size(float):
    pass


class Reordered(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def,override]
        return reversed(list(super().items()))


@pytest.mark.parametrize("value", [
    {"c": Color.RED}, [Name("x")], {"n": Size(2.5)}, {Name("k"): 1},
    collections.OrderedDict([("b", 1), ("a", 2)]), collections.defaultdict(int, a=1),
    Reordered(b=1, a=2), {1: "a", 2: "b"}, {10: 1, 9: 2}, {True: 1, None: 2, 1.5: 3},
    {True: 1, 2: 2, 1.5: 3},
    "\ud800 lone surrogate",
])
def test_subclasses_and_odd_keys_as_before(value: Any) -> None:
    try:
        text = reference(value)
    except TypeError:
        same_error(value)
        return
    assert canonical_text(value) == text
    try:
        expected = text.encode("utf-8")
    except UnicodeEncodeError:
        same_error(value)
    else:
        assert canonical_bytes(value) == expected


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", {"a": object()}, [bytearray(b"x")],
                                   {"k": 1, 2: "mixed keys"}])
def test_what_json_refuses_is_refused(value: Any) -> None:
    same_error(value)


def test_circular_and_deep_data_fail_as_before() -> None:
    loop: list[Any] = []
    loop.append(loop)
    same_error(loop)
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    same_error(deep)
    shallow: Any = "x"
    for _ in range(200):
        shallow = {"k": [shallow]}
    same(shallow)


def test_sha256_is_of_the_canonical_bytes() -> None:
    import hashlib

    value = {"needs": ["é", 1.5, 2**70]}
    assert canonical_sha256(value) == hashlib.sha256(reference(value).encode()).hexdigest()


# -- indented_json: `dihya ... --json` output, by msgspec when it is the same text -----------

INDENTED_CASES: list[Any] = [
    [], {}, [{}], {"a": {}}, {"a": []}, [[]], {"": ""}, [[[1]]], "\t\n\r\b\f",
    {"a": "\x00\x1f\x7f\u2028\u2029é😀\"\\/", "b": None, "c": True, "d": False},
    {"z": 1, "a": 2, "m": [3, {"y": 4, "b": 5}]},  # the data's key order, not sorted
    [1.5, 0.1, -0.0, 2**62, -(2**63), 2**63, 1e20, 1e-7, float("nan"), float("inf")],
    ("tuple", ["inside"]), {"x": "\ud800"},  # a lone surrogate: the standard library's
    [{"name": "bench0000", "hooks": ["before_generation"], "pth": [], "roles": None,
      "priority": 100, "warnings": [], "safe": True}],
]


@pytest.mark.parametrize("value", INDENTED_CASES, ids=range(len(INDENTED_CASES)))
def test_indented_json_is_the_standard_librarys_text(value: Any) -> None:
    assert indented_json(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_indented_json_of_other_types_is_the_standard_librarys_answer() -> None:
    class Items(dict[str, Any]):
        def items(self) -> Any:  # type: ignore[override]
            return [("shown", 1)]

    for value in (Items(hidden=2), {1: "int key"}, {"set": {1}}):
        try:
            expected: Any = json.dumps(value, indent=2, ensure_ascii=False)
        except TypeError as exc:
            expected = type(exc)
        try:
            got: Any = indented_json(value)
        except TypeError as exc:
            got = type(exc)
        assert got == expected
