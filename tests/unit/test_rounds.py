"""In-process rounds (`dihya.sandbox.rounds.call_round`, issue #16): the in-process executor
runs a whole hook round, with the unchanged-return check and the report row inside its
loop. Each test attacks one guarantee the round must keep as the single calls did: only
plugins run in this process are run by its loop, a plugin cannot change what the next
one or the core sees (in place, through a reference it kept, or by returning what only
looks unchanged), every change is checked, and each call's log records, time and
deadline stay its own."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from dihya.gate.decide import ACTIVE
from dihya.pipeline import HookResult, default_executor, hook_caller, run_before_generation
from dihya.plugin import GenerationPluginBase, hook_arguments, implemented_hooks
from dihya.pluginlog import collecting
from dihya.pluginlog.capture import call_stack
from dihya.registry import PluginRecord
from dihya.sandbox.cow import CowDict, FrozenDict, freeze
from dihya.sandbox.executor import HookTarget, InProcessExecutor
from dihya.sandbox.rounds import call_round
from dihya.testing import sample_needs

EXECUTOR = InProcessExecutor()


def record_for(cls: type[GenerationPluginBase], name: str, executor: Any = EXECUTOR,
               **fields: Any) -> PluginRecord:
    """An active record of `cls` as the registry makes one (in-process by default)."""
    instance = cls()
    instance._dihya_entry_point = name  # type: ignore[attr-defined]  # as the loader does
    return PluginRecord(
        name=name, distribution=name, version=cls.version, value=f"{__name__}:{cls.__name__}",
        status=ACTIVE, reason=None, message="active", mode="in-process", fingerprint=None,
        approved_fingerprint=None, hooks=implemented_hooks(cls),
        hook_args=hook_arguments(cls), safe=True, executor=executor, instance=instance,
        **fields)


def checking(checked: list[Any], problems: list[str] | None = None) -> Any:
    """A `check_for` whose check records what it was given (and finds `problems`)."""
    def check_for(given: Any) -> Any:
        def check(value: Any) -> list[str]:
            checked.append(value)
            return list(problems or [])
        return check
    return check_for


def a_round(records: list[PluginRecord], needs: Any, check_for: Any,
            timeout: float = 2.0) -> tuple[Any, list[HookResult]]:
    report: list[HookResult] = []
    guard = hook_caller(report, default_executor, timeout, lambda *_: None)
    out = call_round(records, "before_generation", {"needs": needs, "context": freeze({})},
                     "needs", check_for, guard)
    return out, report


class Quiet(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        return needs


class Fails(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the in-process method of a sandboxed plugin was called")


class Elsewhere:
    """An executor that is not the in-process one (as a sandbox's is): it runs the hook its
    own way (here: a fixed answer) and says it did."""

    kind = "elsewhere"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        return self.call_at(record, hook, kwargs, timeout_s, 0.0)[0]

    def call_at(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
                timeout_s: float, started: float) -> tuple[Any, float]:
        self.calls.append(record.name)
        return {**copy.deepcopy(dict(kwargs["needs"])), "x-elsewhere": True}, started


def test_only_plugins_run_in_this_process_are_run_by_the_rounds_loop() -> None:
    # a record that holds an instance but whose executor is another (a sandbox's): no call
    # plans, so a round hands it to its executor; its in-process method is never called
    elsewhere = Elsewhere()
    odd = record_for(Fails, "odd", executor=elsewhere)
    assert odd.hook_plans == {}
    seen: list[Any] = []

    class After(GenerationPluginBase):
        version = "1.0"

        def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
            seen.append(needs.get("x-elsewhere"))
            return needs

    checked: list[Any] = []
    needs = freeze(sample_needs())
    out, report = a_round([record_for(Quiet, "first"), odd, record_for(After, "after")],
                          needs, checking(checked))
    assert elsewhere.calls == ["odd"]
    # its answer was checked, accepted, and is what the next in-process plugin got
    assert len(checked) == 1 and out is checked[0] and out["x-elsewhere"] is True
    assert seen == [True]
    assert [(h.name, h.status) for h in report] == [("first", "ok"), ("odd", "ok"),
                                                    ("after", "ok")]


class Keeps(GenerationPluginBase):
    """Keeps the view it got and gives it back unchanged."""

    version = "1.0"
    kept: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        type(self).kept.append(needs)
        return needs


class ChangesTheKeptOne(GenerationPluginBase):
    """While it runs, changes the view the previous plugin kept (as that plugin's own thread
    could), then says what it sees itself."""

    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        kept = Keeps.kept[-1]
        assert kept is not needs  # a view of its own, not the one the other plugin holds
        kept["project"] = "evil"
        kept["entities"][0]["name"] = "Evil"
        dict.__setitem__(kept, "x-evil", 1)  # past the view's methods
        type(self).seen.append(copy.deepcopy(needs))
        return needs


def test_a_view_kept_by_one_plugin_reaches_neither_the_next_nor_the_core() -> None:
    Keeps.kept, ChangesTheKeptOne.seen = [], []
    original = sample_needs()
    needs = freeze(copy.deepcopy(original))
    checked: list[Any] = []
    out, report = a_round([record_for(Keeps, "keeps"), record_for(ChangesTheKeptOne, "changes"),
                           record_for(Quiet, "quiet")], needs, checking(checked))
    # the kept view was unchanged when it came back: the needs themselves went on
    assert out is needs and checked == []
    assert ChangesTheKeptOne.seen == [original]
    assert out == original and [h.status for h in report] == ["ok"] * 3


class ChangesInPlace(GenerationPluginBase):
    """Changes its view in place, deep down and past the view's methods, and returns it."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        needs["entities"][0]["name"] = "Changed"
        dict.__setitem__(needs, "x-n", 1.0)  # `1` before: equal, not the same JSON value
        return needs


class RenamesLastKey(GenerationPluginBase):
    """The same values, in the same order, under another last key."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        last = list(needs)[-1]
        needs["x-renamed"] = needs.pop(last)
        return needs


class Records(GenerationPluginBase):
    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        type(self).seen.append(copy.deepcopy(needs))
        return needs


@pytest.mark.parametrize("changer", [ChangesInPlace, RenamesLastKey])
def test_every_change_made_in_a_round_is_checked_and_a_refused_one_reaches_nobody(
        changer: type[GenerationPluginBase]) -> None:
    original = {**sample_needs(), "x-n": 1}
    needs = freeze(copy.deepcopy(original))
    # accepted: checked once, and what the next plugin gets
    Records.seen, checked = [], []
    out, report = a_round([record_for(changer, "changer"), record_for(Records, "records")],
                          needs, checking(checked))
    assert out is not needs and checked == [out] and Records.seen == [out]
    assert out != original and type(out) is FrozenDict
    # refused by the check: reported invalid, and the next plugin gets the needs as they were
    Records.seen, checked = [], []
    out, report = a_round([record_for(changer, "changer"), record_for(Records, "records")],
                          needs, checking(checked, ["no"]))
    assert out is needs and len(checked) == 1 and Records.seen == [original]
    assert [(h.name, h.status) for h in report] == [("changer", "invalid-output"),
                                                    ("records", "ok")]


class SwapsItsClass(GenerationPluginBase):
    """Gives back its view, unchanged, under a class of its own (the same layout)."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        class Sneaky(CowDict):
            __slots__ = ()

            def __getitem__(self, key: Any) -> Any:
                raise AssertionError("the previous plugin's code ran")

        needs.__class__ = Sneaky
        return needs


class Reads(GenerationPluginBase):
    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        type(self).seen.append((type(needs), needs["project"]))
        return needs


def test_a_view_given_back_under_another_class_is_not_handed_on() -> None:
    needs = freeze(sample_needs())
    Reads.seen = []
    out, report = a_round([record_for(SwapsItsClass, "swaps"), record_for(Reads, "reads")],
                          needs, checking([]))
    assert out is needs and Reads.seen == [(CowDict, needs["project"])]
    assert [h.status for h in report] == ["ok", "ok"]


class LeavesACaptureOpen(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        from dihya.pluginlog import begin_call

        begin_call("someone-else")
        self.logger.info("into the open capture")
        return needs


class LogsOnce(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        self.logger.info("mine, project %s", needs["project"])
        return needs


def test_log_records_stay_with_their_call_in_a_round() -> None:
    needs = freeze(sample_needs())
    records = [record_for(LogsOnce, "first"), record_for(LeavesACaptureOpen, "leaves-open"),
               record_for(Quiet, "quiet"), record_for(LogsOnce, "last")]
    with collecting(None, needs) as collector:
        out, report = a_round(records, needs, checking([]))
        logged = collector.finish()
    assert out is needs and call_stack() == []
    # the open capture held its own record; the plugins after it log as themselves
    assert [(r.plugin, r.template) for r in logged] == [
        ("first", "mine, project %s"), ("last", "mine, project %s")]
    assert [h.status for h in report] == ["ok"] * 4


class Slow(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            pass
        return needs


def test_each_call_of_a_round_is_timed_and_held_to_its_deadline() -> None:
    needs = freeze(sample_needs())
    report: list[HookResult] = []
    guard = hook_caller(report, default_executor, 0.01, lambda *_: None)
    out = run_before_generation([record_for(Quiet, "a"), record_for(Slow, "slow"),
                                 record_for(Quiet, "z")], needs, guard)
    assert out is needs
    assert [(h.name, h.status) for h in report] == [("a", "ok"), ("slow", "timeout"),
                                                    ("z", "ok")]
    assert report[1].ms >= 10.0 and report[0].ms < 10.0 and report[2].ms < 10.0


def test_a_round_without_a_chained_argument_ignores_returns_and_needs_no_check() -> None:
    needs = freeze(sample_needs())
    report: list[HookResult] = []
    guard = hook_caller(report, default_executor, 2.0, lambda *_: None)
    assert call_round([record_for(ChangesInPlace, "c")], "before_generation",
                      {"needs": needs}, None, None, guard) is None
    assert needs["entities"][0]["name"] != "Changed" and "x-n" not in needs
    with pytest.raises(ValueError, match="chained round"):
        call_round([], "before_generation", {"needs": needs}, "needs", None, guard)
