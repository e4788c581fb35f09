"""The in-process dispatch path (issue #16): one clock pair per call, a log capture that
makes a buffer only when a plugin logs, per-record hook plans, the frozen context built
directly. Each test attacks one guarantee the fast path must keep: the timing and the
report, deadlines, log capture (a plugin that logs only on its third call, nested calls,
records from another thread), isolation of what the next plugin sees."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from dihya.config import Config
from dihya.gate.decide import ACTIVE
from dihya.pipeline import (
    HookResult,
    default_executor,
    generation_context,
    hook_caller,
    run_before_generation,
    run_generation,
)
from dihya.plugin import GenerationPluginBase, hook_arguments, implemented_hooks
from dihya.pluginlog import collecting
from dihya.pluginlog.capture import call_stack
from dihya.registry import PluginRecord, RegistrySnapshot
from dihya.sandbox.cow import FrozenDict, FrozenList, freeze
from dihya.sandbox.executor import HookTimeout, InProcessExecutor
from dihya.testing import sample_needs

EXECUTOR = InProcessExecutor()


def record_for(cls: type[GenerationPluginBase], name: str, **fields: Any) -> PluginRecord:
    """An active in-process record of `cls`, as the registry makes one."""
    instance = cls()
    instance._dihya_entry_point = name  # type: ignore[attr-defined]  # as the loader does
    return PluginRecord(
        name=name, distribution=name, version=cls.version, value=f"{__name__}:{cls.__name__}",
        status=ACTIVE, reason=None, message="active", mode="in-process", fingerprint=None,
        approved_fingerprint=None, hooks=implemented_hooks(cls),
        hook_args=hook_arguments(cls), safe=True, executor=EXECUTOR, instance=instance,
        **fields)


def snapshot_of(*records: PluginRecord, timeout: float = 2.0) -> RegistrySnapshot:
    config = Config(path=Path("dispatch-test.toml"), exists=False, hook_timeout_s=timeout)
    return RegistrySnapshot(records, config, time.time(), 0.0)


class LogsOnThirdCall(GenerationPluginBase):
    version = "1.0"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 3:
            self.logger.info("third call for project %s", needs["project"])
        return needs


class Quiet(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        return needs


def test_a_plugin_that_logs_only_on_its_third_call_gets_its_records_captured() -> None:
    logs_late = record_for(LogsOnThirdCall, "late")
    quiet = record_for(Quiet, "quiet")
    needs = freeze(sample_needs())
    with collecting("r", needs) as collector:
        for _ in range(2):
            EXECUTOR.call(logs_late, "before_generation", {"needs": needs}, 2.0)
            EXECUTOR.call(quiet, "before_generation", {"needs": needs}, 2.0)
        assert collector.finish() == []
        EXECUTOR.call(logs_late, "before_generation", {"needs": needs}, 2.0)
        EXECUTOR.call(quiet, "before_generation", {"needs": needs}, 2.0)
        records = collector.finish()
    assert [(r.plugin, r.template, r.args) for r in records] == [
        ("late", "third call for project %s", ["[needs]"])]
    assert call_stack() == []  # every call closed what it opened


class LogsAndCallsAnother(GenerationPluginBase):
    """Logs, calls another plugin's hook through the executor (which logs too), logs again."""

    version = "1.0"
    inner: PluginRecord | None = None

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        self.logger.info("outer before")
        assert self.inner is not None
        EXECUTOR.call(self.inner, "before_generation", {"needs": needs}, 2.0)
        self.logger.info("outer after")
        return needs


class LogsOnce(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        self.logger.info("inner")
        return needs


def test_nested_calls_keep_each_plugins_records_apart() -> None:
    inner = record_for(LogsOnce, "inner")
    outer = record_for(LogsAndCallsAnother, "outer")
    assert isinstance(outer.instance, LogsAndCallsAnother)
    outer.instance.inner = inner
    needs = freeze(sample_needs())
    with collecting(None, needs) as collector:
        EXECUTOR.call(outer, "before_generation", {"needs": needs}, 2.0)
        records = collector.finish()
    assert [(r.plugin, r.template) for r in records] == [
        ("inner", "inner"), ("outer", "outer before"), ("outer", "outer after")]
    assert call_stack() == []


class LogsFromAThread(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        worker = threading.Thread(target=self.logger.info, args=("zyx thread",))
        worker.start()
        worker.join()
        self.logger.info("zyx call")
        return needs


def test_a_record_from_a_plugin_thread_waits_for_its_next_call() -> None:
    record = record_for(LogsFromAThread, "threads")
    needs = freeze(sample_needs())
    with collecting(None, needs) as collector:
        EXECUTOR.call(record, "before_generation", {"needs": needs}, 2.0)
        first = [r.template for r in collector.finish()]
        EXECUTOR.call(record, "before_generation", {"needs": needs}, 2.0)
        second = [r.template for r in collector.finish()]
    assert first == ["zyx call"]
    # made on another thread, outside the call's stack: delivered with the next call, first
    assert second == ["zyx thread", "zyx call"]
    assert call_stack() == []


class Slow(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            pass
        return needs


def test_every_plugin_is_timed_and_reported_and_the_deadline_holds() -> None:
    records = [record_for(Quiet, "a"), record_for(Slow, "slow"), record_for(Quiet, "z")]
    report: list[HookResult] = []
    call = hook_caller(report, default_executor, 0.01, lambda *_: None)
    needs = freeze(sample_needs())
    out = run_before_generation(records, needs, call)
    assert out is needs
    assert [(h.name, h.status) for h in report] == [
        ("a", "ok"), ("slow", "timeout"), ("z", "ok")]
    assert all(h.ms >= 0.0 for h in report)
    assert report[1].ms >= 10.0  # its own 50 ms, past the 10 ms deadline
    assert "limit is 0.01 s" in (report[1].detail or "")
    with pytest.raises(HookTimeout):
        EXECUTOR.call(records[1], "before_generation", {"needs": needs}, 0.01)
    # the started time the caller hands over is the start of the deadline
    with pytest.raises(HookTimeout):
        EXECUTOR.call_at(records[0], "before_generation", {"needs": needs}, 1.0,
                         time.perf_counter() - 2.0)
    value, ended = EXECUTOR.call_at(records[0], "before_generation", {"needs": needs}, 1.0,
                                    time.perf_counter())
    assert value == needs and ended <= time.perf_counter()


class Mutates(GenerationPluginBase):
    """Changes its view in place at every level, and returns something else."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        needs["entities"][0]["name"] = "Changed"
        needs["entities"].append({"name": "Extra", "fields": [{"name": "n", "type": "integer"}]})
        needs["x-added"] = 1
        return copy.deepcopy(needs) | {"project": "other"}


class Records(GenerationPluginBase):
    version = "1.0"
    seen: ClassVar[list[Any]] = []

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        type(self).seen.append(copy.deepcopy(needs))
        return needs


def test_a_plugin_that_changes_its_view_in_place_changes_nothing_shared() -> None:
    Records.seen = []
    mutates = record_for(Mutates, "mutates", priority=1)
    after = record_for(Records, "records", priority=2)
    original = sample_needs()
    snap = snapshot_of(mutates, after)
    result = run_generation(copy.deepcopy(original), snap)
    assert [(h.name, h.status) for h in result.plugins] == [
        ("mutates", "ok"), ("records", "ok")]
    seen = Records.seen[0]
    # what `mutates` returned (validated, accepted), not what it wrote into its view
    assert seen["project"] == "other"
    assert seen["entities"][0]["name"] == "Changed" and "x-added" in seen
    # the core's copy of the original needs is untouched
    again = run_generation(copy.deepcopy(original), snapshot_of(after))
    assert Records.seen[-1] == original
    assert again.plugins[0].status == "ok"


def test_the_context_is_built_frozen_and_each_hook_gets_a_private_view() -> None:
    records = [record_for(Quiet, "one"), record_for(Quiet, "two")]
    context = generation_context(records, "dev", "req-1")
    assert type(context) is FrozenDict and type(context["plugins"]) is FrozenList
    assert context == {"hook_api_version": context["hook_api_version"], "request_id": "req-1",
                       "role": "dev", "plugins": ["one", "two"]}
    assert freeze(context) is context
    with pytest.raises(TypeError):
        context["plugins"].append("three")


def test_hook_plans_are_made_once_per_record_and_follow_its_instance() -> None:
    record = record_for(Quiet, "planned")
    method, takes, by_position, single = record.hook_plans["before_generation"]
    assert method.__self__ is record.instance and takes == ("needs",) and by_position
    assert single == "needs"
    replaced = attrs.evolve(record, instance=Quiet())
    assert replaced.hook_plans["before_generation"][0].__self__ is replaced.instance
    assert replaced.instance is not record.instance
    # no instance (a sandboxed plugin, a listing): no plans, the executor says so
    bare = attrs.evolve(record, instance=None)
    assert bare.hook_plans == {}
    with pytest.raises(RuntimeError, match="not loaded in this process"):
        EXECUTOR.call(bare, "before_generation", {"needs": freeze(sample_needs())}, 2.0)


class Signatures(GenerationPluginBase):
    """Hooks whose parameters are not the spec's, in the spec's order: bound by name."""

    version = "1.0"
    seen: ClassVar[list[tuple[str, Any]]] = []

    def before_generation(self, *, needs: dict[str, Any]) -> dict[str, Any]:
        type(self).seen.append(("before", type(needs).__name__))
        return needs

    def after_generation(self, needs: dict[str, Any], code: dict[str, str]) -> dict[str, str]:
        type(self).seen.append(("after", (needs["project"], sorted(code) == ["f.txt"])))
        return code

    def on_generation_error(self, **kwargs: Any) -> None:
        type(self).seen.append(("error", sorted(kwargs)))


class InOrder(GenerationPluginBase):
    version = "1.0"

    def after_generation(self, code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
        return {**code, "g.txt": needs["project"]}


def test_arguments_are_bound_by_name_unless_the_parameters_are_the_specs_in_order() -> None:
    Signatures.seen = []
    odd = record_for(Signatures, "odd")
    plain = record_for(InOrder, "plain")
    assert [odd.hook_plans[h][2] for h in ("before_generation", "after_generation",
                                           "on_generation_error")] == [False, False, False]
    assert plain.hook_plans["after_generation"][1:] == (("code", "needs"), True, None)
    needs = freeze(sample_needs())
    code = freeze({"f.txt": "x"})
    given = {"code": code, "needs": needs, "context": freeze({})}
    EXECUTOR.call(odd, "before_generation", given, 2.0)
    EXECUTOR.call(odd, "after_generation", given, 2.0)
    EXECUTOR.call(odd, "on_generation_error", {"error": freeze({}), **given}, 2.0)
    assert Signatures.seen == [("before", "CowDict"), ("after", ("todo", True)),
                               ("error", ["context", "error", "needs"])]  # the spec's
    out = EXECUTOR.call(plain, "after_generation", given, 2.0)
    assert out == {"f.txt": "x", "g.txt": "todo"}
    # a hook called without one of its arguments: bound by name, the missing one absent
    with pytest.raises(TypeError, match="needs"):
        EXECUTOR.call(plain, "after_generation", {"code": code}, 2.0)


class RenamesLastKey(GenerationPluginBase):
    """Same values, in the same order, under another last key: a change."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        last = list(needs)[-1]
        needs["x-renamed"] = needs.pop(last)
        return needs


class ReadsOnly(GenerationPluginBase):
    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        assert needs["entities"][0]["fields"][0]["name"]
        return needs


class SwapsEqualValue(GenerationPluginBase):
    """`1` becomes `1.0`: equal, not the same JSON value, so a change (validated)."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        needs["x-n"] = 1.0
        return needs


def test_only_an_unchanged_view_skips_the_check() -> None:
    checked: list[Any] = []

    def check(value: Any) -> list[Any]:
        checked.append(value)
        return []

    report: list[HookResult] = []
    call = hook_caller(report, default_executor, 2.0, lambda *_: None)
    needs = freeze({**sample_needs(), "x-n": 1})
    kwargs = {"needs": needs, "context": freeze({})}
    for cls in (Quiet, ReadsOnly, Quiet):
        ok, value = call(record_for(cls, cls.__name__), "before_generation", kwargs, check,
                         needs)
        assert ok and value is needs
    assert checked == []
    ok, value = call(record_for(RenamesLastKey, "renames"), "before_generation", kwargs,
                     check, needs)
    assert ok and value is not needs and "x-renamed" in value and checked == [value]
    ok, value = call(record_for(SwapsEqualValue, "swaps"), "before_generation", kwargs,
                     check, needs)
    assert ok and value is not needs and type(value["x-n"]) is float
    assert len(checked) == 2
    # the same round again, after the changes: the unchanged ones still skip the check
    ok, value = call(record_for(Quiet, "again"), "before_generation", kwargs, check, needs)
    assert ok and value is needs and len(checked) == 2
    assert [h.status for h in report] == ["ok"] * 6


class LeavesACaptureOpen(GenerationPluginBase):
    """Begins a capture of its own and never ends it, then logs."""

    version = "1.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        from dihya.pluginlog import begin_call

        begin_call("someone-else")
        self.logger.info("into the open capture")
        return needs


def test_a_call_left_open_inside_a_hook_is_closed_with_it() -> None:
    from dihya.pluginlog import begin_call, end_call

    record = record_for(LeavesACaptureOpen, "leaves-open")
    quiet = record_for(LogsOnce, "after-it")
    needs = freeze(sample_needs())
    with collecting(None, needs) as collector:
        EXECUTOR.call(record, "before_generation", {"needs": needs}, 2.0)
        assert call_stack() == []
        EXECUTOR.call(quiet, "before_generation", {"needs": needs}, 2.0)
        records = collector.finish()
    # the open capture held its record (it is that capture's, never another plugin's)
    assert [(r.plugin, r.template) for r in records] == [("after-it", "inner")]
    outer = begin_call("outer")
    begin_call("inner-left-open")
    end_call(outer)
    assert call_stack() == []
