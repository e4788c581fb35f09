"""A request's argument as changes to what the worker holds (`argument_delta`, rebuilt by
`worker.rebuild_arguments`): the rebuild is the argument, keys in order, or it is sent in
full."""

from __future__ import annotations

import random

import pytest

from dihya.sandbox.pool import argument_delta
from dihya.sandbox.protocol import ProtocolError
from dihya.sandbox.worker import rebuild_arguments

BASE = {"a.py": "a", "b.py": "b", "c/d.md": "d", "e.txt": "e"}


def _rebuilt(held: dict[str, str], value: dict[str, str]) -> dict[str, str] | None:
    delta = argument_delta(held, value)
    if delta is None:
        return None
    kept = {"code": dict(held)}
    rebuilt = rebuild_arguments({"needs": {}}, {"code": delta}, ["code"], kept)
    assert kept["code"] == rebuilt["code"], "the worker keeps what it rebuilt"
    return rebuilt["code"]


@pytest.mark.parametrize(("value", "changed"), [
    (dict(BASE), {}),
    ({**BASE, "b.py": "B"}, {"b.py": "B"}),
    ({**BASE, "z.txt": "new"}, {"z.txt": "new"}),
    ({k: v for k, v in BASE.items() if k != "b.py"}, {}),
    ({**{k: v for k, v in BASE.items() if k != "a.py"}, "b.py": "B", "y": "y"},
     {"b.py": "B", "y": "y"}),
])
def test_a_delta_carries_only_what_changed_and_rebuilds_the_value(value, changed) -> None:
    delta = argument_delta(BASE, value)
    assert delta is not None and delta["set"] == changed
    rebuilt = _rebuilt(BASE, value)
    assert rebuilt == value and list(rebuilt) == list(value)


@pytest.mark.parametrize("value", [
    {"b.py": "b", "a.py": "a", "c/d.md": "d", "e.txt": "e"},  # a key moved
    {**{k: v for k, v in BASE.items() if k != "b.py"}, "b.py": "b"},  # removed, re-added
    {k: v + "!" for k, v in BASE.items()},  # every value new: no smaller than in full
])
def test_what_a_delta_cannot_say_in_order_or_smaller_is_sent_in_full(value) -> None:
    assert argument_delta(BASE, value) is None


def test_nothing_held_is_sent_in_full() -> None:
    assert argument_delta(None, BASE) is None


def test_random_edits_rebuild_exactly_or_go_in_full() -> None:
    rng = random.Random(16)
    for _ in range(2000):
        held = {f"f{i}": rng.choice("xyz") for i in rng.sample(range(12), rng.randint(0, 8))}
        items = list(held.items())
        if rng.random() < 0.2:
            rng.shuffle(items)
        value = dict(items)
        for _ in range(rng.randint(0, 4)):
            edit = rng.random()
            key = f"f{rng.randrange(14)}"
            if edit < 0.4:
                value[key] = rng.choice("xyzw")
            elif edit < 0.7:
                value.pop(key, None)
            else:
                value = {**value, key: "n"}
        rebuilt = _rebuilt(held, value)
        assert rebuilt is None or (rebuilt == value and list(rebuilt) == list(value))


def test_a_hook_changing_its_argument_does_not_change_what_is_held() -> None:
    kept: dict[str, dict[str, str]] = {}
    given = rebuild_arguments({"code": dict(BASE)}, None, ["code"], kept)
    given["code"]["a.py"] = "changed"
    del given["code"]["b.py"]
    assert kept["code"] == BASE


@pytest.mark.parametrize("delta", [
    {"code": {"set": {}, "removed": []}},  # nothing held under that name
    {"code": {"set": [], "removed": []}},
    {"code": "text"},
    ["code"],
])
def test_a_delta_to_nothing_held_or_malformed_is_refused(delta) -> None:
    with pytest.raises(ProtocolError):
        rebuild_arguments({}, delta, ["code"], {"needs": {}})
