"""A round: one hook called on each plugin of a generation in turn, the in-process ones by
the in-process executor's own loop, with the report row and the unchanged-return check
inside it (issue #16).

`HookExecutor.call_at` serves one call; the pipeline's guarded call then checks the return
and appends the report row, two Python frames per plugin around the hook's own. A round
(`call_round`) does the same work for a whole run of plugins in one frame: for each
plugin, a private copy-on-write view of each argument it takes (`dihya.sandbox.cow`), the
log capture of the call (`dihya.pluginlog.capture`), the call, the clock read that is both
the deadline and the report's `ms`, then the check of what came back and the row. Only
what the fast path cannot settle leaves the loop, to the caller's `RoundGuard`:

- a plugin without a call plan for the hook (a sandboxed one: plans are made only for
  plugins loaded here whose executor the registry chose in-process, `executor.hook_plans`,
  and a record cannot change): the guard's own guarded call (`RoundGuard.call`);
- a return other than the chained argument's view, unchanged (the same values, by
  identity, under the same keys, in the same order): `RoundGuard.settle`, which freezes and
  validates it in full, exactly as a single call's return;
- an exception or an overrun deadline: `RoundGuard.failed`, which reports it (and raises
  when the plugin is required).

A *chained* round hands each plugin the chained argument as the previous plugin left it
(`before_generation`'s needs, `after_generation`'s code): an accepted change replaces it
for the next plugins. A round without a chained argument (`on_generation_error`) ignores
what the hooks return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import is_
from time import perf_counter
from typing import Any, Final, NamedTuple, Protocol

from dihya.pluginlog import deliver
from dihya.pluginlog.capture import (
    CALLS,
    CAPTURE_HANDLER,
    PLUGIN_LOGGER,
    WAITING,
    CallBuffer,
    call_entry,
    install,
)
from dihya.reasons import HookStatus
from dihya.sandbox.cow import CowDict, FrozenDict, plain_of
from dihya.sandbox.executor import (
    HookTarget,
    HookTimeout,
    views_for,
)

OK: Final = HookStatus.OK

#: A check of a hook's frozen return: its problems (none: valid).
Check = Callable[[Any], list[Any]]


class HookResult(NamedTuple):
    """How one hook of one plugin went; `detail` never carries needs or code.

    A named tuple, not an attrs class: the pipeline makes one per hook call, and a tuple
    costs a fifth of a frozen attrs instance (issue #16)."""

    name: str
    hook: str
    status: str
    ms: float
    detail: str | None = None
    # the plugin's sandbox worker died or broke the protocol (not part of the report);
    # pass it by keyword
    violation: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "hook": self.hook, "status": self.status,
                               "ms": round(self.ms, 3)}
        if self.detail:
            out["detail"] = self.detail
        return out


class RoundTarget(HookTarget, Protocol):
    """A plugin as a round sees it: a `HookTarget` that says which hooks it implements."""

    @property
    def hooks(self) -> Sequence[str]: ...


class RoundGuard(Protocol):
    """What a round needs of its caller (the pipeline's `HookCaller`): the report it appends
    to, the deadline, and the guarded paths for what the round's own loop does not settle.

    `call` calls one hook of a plugin the round does not run itself and reports it;
    `settle` freezes and checks a return that is not the unchanged view of `given` and
    reports it; `failed` reports a call that raised or overran its deadline (and raises
    for a required plugin). Each returns `(ok, frozen value)`."""

    report: list[HookResult]
    timeout_s: float

    def call(self, record: Any, hook: str, kwargs: dict[str, Any], check: Check | None,
             given: Any) -> tuple[bool, Any]: ...

    def settle(self, record: Any, hook: str, value: Any, check: Check, given: Any,
               started: float, ended: float) -> tuple[bool, Any]: ...

    def failed(self, record: Any, hook: str, exc: Exception, ms: float) -> tuple[bool, Any]: ...


# `dict`'s own methods, past a view's overrides (method descriptors: `dict.__iter__` is a
# slot wrapper, several times slower to call)
_dict_values: Final = dict.values
_dict_keys: Final = dict.keys
_new_row: Final = tuple.__new__  # HookResult's own __new__, without its keyword handling
_NOTHING: Final[Any] = object()


def call_round(records: Sequence[RoundTarget], hook: str, kwargs: dict[str, Any],
               chained: str | None, check_for: Callable[[Any], Check] | None,
               guard: RoundGuard,
               accepted: Callable[[Any], None] | None = None,
               later: Callable[[], Mapping[str, Any]] | None = None) -> Any:
    """Call `hook` of each of `records` that implements it, in order; report each call in
    `guard.report`; return the chained argument as the last plugin left it (None without one).

    `kwargs` holds the round's frozen arguments by name (the spec's; never changed here).
    `chained` names the one each accepted return replaces; `check_for(value)` is the check
    of a return that replaces `value` (made again after each accepted change: the check of
    code depends on the code it changes), given with `chained` and only then;
    `accepted(value)` is told each accepted change. `later()` gives the arguments the
    round's `kwargs` leave out (a generation's `context`): called once, when a call first
    may need them (a hook that takes other arguments than the chained one alone, or a
    plugin run elsewhere), so a round whose hooks take none of them never makes them.
    The chained argument must be valid: a return that is its view, unchanged, is that very
    argument, reported `ok` without a check. Without `chained`, returns are ignored.

    The loop is `InProcessExecutor.call_at` and the guarded call's fast path, inlined: a
    private view of each argument a hook takes, a log capture that allocates only when the
    hook logs, one clock read before the views and one when the hook returned (the
    deadline and the report's `ms`, as the single calls read them); a plugin without a
    call plan for `hook` goes through `guard.call`. The round runs on the caller's thread:
    the thread's capture stack is read once.
    """
    if (chained is None) != (check_for is None):
        raise ValueError("a chained round needs the check of its returns, and only it")
    append = guard.report.append
    timeout = guard.timeout_s
    stack = CALLS.stack  # `call_stack()`: this thread's, and a round runs on one thread
    push, pop = stack.append, stack.pop
    depth = len(stack)  # where each call's entry goes (kept in step if a hook unbalances it)
    top = depth + 1
    # the loop's globals as locals
    clock, cow, new_row, row, ok = perf_counter, CowDict, _new_row, HookResult, OK
    given = kwargs[chained] if chained is not None else _NOTHING
    check: Check | None = None  # the check of a changed return, made when one comes
    # the chained argument's items, when it is a `FrozenDict`: as the plain dict it keeps
    # (`plain_of`: the same objects; `CowDict(plain)` copies an exact dict on C's fast
    # path), values and keys
    plain = None
    if type(given) is FrozenDict:  # `plain_of`, inlined
        plain = given._plain
        if plain is None:
            plain = given._plain = dict.copy(given)
    given_values = tuple(_dict_values(given)) if plain is not None else ()
    given_keys = tuple(_dict_keys(given)) if plain is not None else ()
    # the plan's `single` that takes the fast path: the chained argument's view alone
    fast = chained if plain is not None else _NOTHING
    for record in records:
        plan = record.hook_plans.get(hook)
        if plan is None:
            if hook not in record.hooks:
                continue
            if later is not None:  # the arguments left out: this plugin may take them
                kwargs = {**kwargs, **later()}
                later = None
            # not run here (a sandboxed plugin; a method without a plan): the guarded call
            if check is None and check_for is not None:
                check = check_for(given)
            done, value = guard.call(record, hook, kwargs, check, given)
            depth = len(stack)  # as the hook left it
            top = depth + 1
        else:  # a plan: loaded and run in this process (`executor.hook_plans`)
            method, takes, by_position, single = plan
            alone = single == fast  # it takes the chained argument only, a `FrozenDict`
            if not alone and later is not None:  # it may take what `kwargs` leave out
                kwargs = {**kwargs, **later()}
                later = None
            if CAPTURE_HANDLER not in PLUGIN_LOGGER.handlers:  # the plugin's `self.logger`
                install()
            name = record.name
            entry: Any = name
            if WAITING and name in WAITING:  # records it made outside a call come first
                entry = call_entry(name)
            started = clock()  # the views are part of the call, as in `call_at`
            try:
                if alone:
                    mine = cow(plain)  # type: ignore[arg-type]  # `view(given)`; `alone`: a dict
                    mine.base = given
                    push(entry)
                    result = method(mine)
                else:
                    args, copies = views_for(takes, by_position, kwargs)
                    mine = _NOTHING if chained is None else (
                        copies.get(chained, _NOTHING) if args is None
                        else _at(args, takes, chained))
                    push(entry)
                    result = method(*args) if args is not None else method(**copies)
            except Exception as exc:
                error: Exception | None = exc
            else:
                error = None
            finally:
                ended = clock()
                if len(stack) == top:
                    logged = pop()
                else:  # the hook left calls of its own open, or closed this one: unwind
                    logged = stack[depth] if len(stack) > depth else entry
                    del stack[depth:]
                    depth = len(stack)
                    top = depth + 1
                # a buffer: it logged (or had waiting records)
                if logged is not name and isinstance(logged, CallBuffer):
                    deliver(record, logged.take(), kwargs)
            if error is not None:
                done, value = guard.failed(record, hook, error, (clock() - started) * 1000)
            elif ended - started > timeout:
                done, value = guard.failed(
                    record, hook,
                    HookTimeout(f"{hook} took {ended - started:.3f} s, the limit is {timeout} s"),
                    (clock() - started) * 1000)
            elif result is mine and (all(map(is_, _dict_values(mine), given_values))
                                     and tuple(_dict_keys(mine)) == given_keys):
                # the chained argument's view, unchanged: the argument itself. The same
                # keys in the same order (by equality: JSON keys are text, and an equal
                # key is that key; a key more or less makes the tuples differ), and under
                # them the same values by identity (`map` stops at the shorter side: the
                # keys said both sides are as long)
                append(new_row(row, (name, hook, ok, (ended - started) * 1000, None, False)))
                continue
            elif check_for is None:  # no chained argument: the return is not used
                append(new_row(row, (name, hook, ok, (ended - started) * 1000, None, False)))
                continue
            else:
                if check is None:
                    check = check_for(given)
                done, value = guard.settle(record, hook, result, check, given, started, ended)
        if done and value is not given and chained is not None:
            given = value
            kwargs = {**kwargs, chained: value}
            if accepted is not None:
                accepted(value)
            check = None
            plain = plain_of(given) if type(given) is FrozenDict else None
            given_values = tuple(_dict_values(given)) if plain is not None else ()
            given_keys = tuple(_dict_keys(given)) if plain is not None else ()
            fast = chained if plain is not None else _NOTHING
    return given if chained is not None else None


def _at(args: list[Any], takes: tuple[str, ...] | None, name: str) -> Any:
    """The argument `name` of `args` (passed by position as `takes` says)."""
    return args[takes.index(name)] if takes is not None and name in takes else _NOTHING
