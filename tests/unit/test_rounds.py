"""In-process rounds (`dihya.sandbox.rounds.call_round`, issue #16): the in-process executor
runs a whole hook round, with the unchanged-return check and the report row inside its
loop. Each test attacks one guarantee the round must keep as the single calls did: only
plugins run in this process are run by its loop, a plugin cannot change what the next
one or the core sees (in place, through a reference it kept, or by returning what only
looks unchanged), every change is checked, and each call's log records, time and
deadline stay its own. The generation's context, made only when a hook may take it
(`pipeline.LazyContext`, a round's `later`), still reaches every hook that takes it, in
every round and through every executor, whole and the same for each."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_dispatch import LeavesACaptureOpen, Quiet, RenamesLastKey, Slow

from dihya import pipeline
from dihya.config import Config
from dihya.gate.decide import ACTIVE
from dihya.pipeline import (
    GenerationFailed,
    HookResult,
    default_executor,
    hook_caller,
    run_before_generation,
    run_generation,
)
from dihya.plugin import HOOK_API_VERSION, GenerationPluginBase, hook_arguments, implemented_hooks
from dihya.pluginlog import collecting
from dihya.pluginlog.capture import call_stack
from dihya.registry import PluginRecord, RegistrySnapshot
from dihya.sandbox.cow import CowDict, FrozenDict, freeze, thaw
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


# --- the context made when a hook first may take it (`pipeline.LazyContext`, `later`) ---

class TakesContext(GenerationPluginBase):
    """Takes the context in both rounds, and changes its own view of it."""

    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any], context: dict[str, Any]
                          ) -> dict[str, Any]:
        type(self).seen.append(("before", copy.deepcopy(context)))
        context["role"] = "admin"
        context["plugins"].append("intruder")
        dict.__setitem__(context, "request_id", "forged")  # past the view's methods
        return needs

    def after_generation(self, code: dict[str, str], context: dict[str, Any]
                         ) -> dict[str, str]:
        type(self).seen.append(("after", copy.deepcopy(context)))
        return code


class TakesEverything(GenerationPluginBase):
    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, **kwargs: Any) -> dict[str, Any]:
        type(self).seen.append(copy.deepcopy(kwargs["context"]))
        needs: dict[str, Any] = kwargs["needs"]
        return needs


class Recorder:
    """An executor other than the in-process one (as a sandbox's is): records the context
    it is handed and gives the chained argument back as it came."""

    kind = "recorder"

    def __init__(self) -> None:
        self.contexts: list[tuple[str, Any]] = []

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        return self.call_at(record, hook, kwargs, timeout_s, 0.0)[0]

    def call_at(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
                timeout_s: float, started: float) -> tuple[Any, float]:
        self.contexts.append((hook, kwargs.get("context")))
        chained = "needs" if hook == "before_generation" else "code"
        return thaw(kwargs[chained]), started


class NotHere(GenerationPluginBase):
    """A plugin whose in-process methods must never run (another executor runs it)."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("run in-process")

    def after_generation(self, code: dict[str, str]) -> dict[str, str]:
        raise AssertionError("run in-process")


class FailsRequired(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("no")


class Watches(GenerationPluginBase):
    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def on_generation_error(self, error: dict[str, Any], context: dict[str, Any]) -> None:
        type(self).seen.append((error["plugin"], copy.deepcopy(context)))


def snapshot_of(*records: PluginRecord) -> RegistrySnapshot:
    config = Config(path=Path("rounds-test.toml"), exists=False, hook_timeout_s=2.0)
    return RegistrySnapshot(records, config, time.time(), 0.0)


def context_for(*names: str) -> dict[str, Any]:
    return {"hook_api_version": HOOK_API_VERSION, "request_id": "req-9", "role": "dev",
            "plugins": list(names)}


@pytest.mark.parametrize("rounds", [True, False], ids=["call_round", "round_by_calls"])
def test_every_hook_that_takes_the_context_gets_the_generations_own(rounds: bool) -> None:
    # the context is made only when a hook may take it: it must still reach every hook
    # that does (a method taking it by name, `**kwargs`, a plugin run by another
    # executor), in every round, whole, and one plugin's changes to it reach nobody
    TakesContext.seen, TakesEverything.seen = [], []
    recorder = Recorder()
    snapshot = snapshot_of(record_for(Quiet, "a-quiet"),
                           record_for(NotHere, "b-elsewhere", executor=recorder),
                           record_for(TakesContext, "c-context"),
                           record_for(TakesEverything, "d-all"))
    executor_for = default_executor if rounds else (lambda r: r.executor or EXECUTOR)
    result = run_generation(sample_needs(), snapshot, role="dev", request_id="req-9",
                            executor_for=executor_for)
    expected = context_for("a-quiet", "b-elsewhere", "c-context", "d-all")
    assert TakesContext.seen == [("before", expected), ("after", expected)]
    assert TakesEverything.seen == [expected]
    assert [(hook, type(context), context) for hook, context in recorder.contexts] == [
        ("before_generation", FrozenDict, expected), ("after_generation", FrozenDict, expected)]
    assert all(h.status == "ok" for h in result.plugins), result.plugins


def test_on_generation_error_gets_the_context_too() -> None:
    Watches.seen = []
    snapshot = snapshot_of(record_for(Quiet, "a-quiet"),
                           record_for(FailsRequired, "b-must", required=True),
                           record_for(Watches, "c-watch"))
    with pytest.raises(GenerationFailed):
        run_generation(sample_needs(), snapshot, role="dev", request_id="req-9")
    assert Watches.seen == [("b-must", context_for("a-quiet", "b-must", "c-watch"))]


def test_the_context_is_made_once_a_generation_and_only_when_a_hook_may_take_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    real = pipeline.generation_context

    def spy(*args: Any) -> Any:
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(pipeline, "generation_context", spy)
    run_generation(sample_needs(), snapshot_of(record_for(Quiet, "a"), record_for(Quiet, "b")))
    run_before_generation([record_for(Quiet, "a")], freeze(sample_needs()),
                          hook_caller([], default_executor, 2.0, lambda *_: None))
    assert made == []  # no hook takes it: not made
    TakesContext.seen = []
    run_generation(sample_needs(), snapshot_of(record_for(Quiet, "a"),
                                               record_for(TakesContext, "b")))
    assert len(made) == 1 and len(TakesContext.seen) == 2  # made once, for both rounds


class ClearsPastItsMethods(GenerationPluginBase):
    """Empties its view and fills it with its own values past the view's methods (as C code
    could), and says whether the view it got was the core's plain copy of the needs."""

    version = "1.0"
    got_the_plain_copy: ClassVar[list[bool]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        base = needs.base  # type: ignore[attr-defined]  # a CowDict's frozen base
        type(self).got_the_plain_copy.append(needs is base._plain)
        dict.clear(needs)
        dict.update(needs, {"project": "evil", "x-evil": 1})
        return needs


class SpoilsThePlainCopy(GenerationPluginBase):
    """Reaches past its view for the core's plain copy of the needs (`FrozenDict._plain`, the
    dict views are copied from) and writes an invalid value into it: malice, which the
    in-process executor does not stop (see docs/threat-model.md), but whose result must
    still never reach the core unchecked."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        plain = needs.base._plain  # type: ignore[attr-defined]
        plain["entities"] = "not a list"
        return needs


@pytest.mark.parametrize("rounds", [True, False])
def test_the_plain_copy_views_are_made_from_is_never_handed_out_nor_changed(
        rounds: bool) -> None:
    original = sample_needs()
    needs = freeze(copy.deepcopy(original))
    ClearsPastItsMethods.got_the_plain_copy, Records.seen = [], []
    report: list[HookResult] = []
    guard = hook_caller(report, default_executor if rounds else (lambda record: EXECUTOR),
                        2.0, lambda *_: None)
    checked: list[Any] = []
    out = guard.round([record_for(ClearsPastItsMethods, "clears"),
                       record_for(Records, "records"), record_for(ClearsPastItsMethods, "again"),
                       record_for(Records, "records-too")],
                      "before_generation", {"needs": needs}, "needs", checking(checked, ["no"]))
    # each refused, and the next plugin got the needs as they were, from a copy untouched
    assert out is needs and len(checked) == 2
    assert ClearsPastItsMethods.got_the_plain_copy == [False, False]
    assert Records.seen == [original, original]
    plain = needs._plain
    assert plain == original and all(plain[k] is needs[k] for k in needs)
    assert [h.status for h in report] == ["invalid-output", "ok", "invalid-output", "ok"]


@pytest.mark.parametrize("rounds", [True, False])
def test_a_spoiled_plain_copy_never_reaches_the_core_unchecked(rounds: bool) -> None:
    needs = freeze(sample_needs())
    report: list[HookResult] = []
    guard = hook_caller(report, default_executor if rounds else (lambda record: EXECUTOR),
                        2.0, lambda *_: None)
    # the next plugin gives back its view, unchanged, but that view was copied from the
    # spoiled plain dict: the round sees a change (it compares with the frozen needs) and
    # the full check refuses it
    out = run_before_generation([record_for(SpoilsThePlainCopy, "spoils"),
                                 record_for(Quiet, "innocent"), record_for(Quiet, "too")],
                                needs, guard)
    assert out is needs and out["entities"] == sample_needs()["entities"]
    assert [(h.name, h.status) for h in report] == [
        ("spoils", "ok"), ("innocent", "invalid-output"), ("too", "invalid-output")]
