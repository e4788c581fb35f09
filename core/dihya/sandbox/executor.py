"""How a hook is called: the executor interface, what every executor shares, and the
in-process executor (the sandboxed one is `dihya.sandbox.pool`).

The pipeline only knows `HookExecutor`; which executor serves a plugin is decided by its
approval's `mode`. In-process runs a hook in the backend's own process: fastest, but with
the backend's rights, only for plugins whose class says `safe = True` and that an operator
approved with `mode = "in-process"`. A hook gets copy-on-write views of the core's
frozen arguments (`dihya.sandbox.cow`), so a plugin cannot change what others see, and
copies only what it reads; what the hook logs is caught per call and delivered to the
collector under way (`dihya.pluginlog`), as a sandbox worker's answer carries it; a hook
cannot be interrupted there: one that overruns its deadline is reported as a timeout once
it returns (the sandbox kills its worker instead).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any, Final, Protocol

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
from dihya.reasons import FixedReasonError, HookStatus
from dihya.sandbox.cow import CowDict, FrozenDict, view

#: How an in-process plugin's hook is called, made once per registry record (`hook_plans`):
#: `(method, takes, by_position, single)`, the bound method looked up once, not per call;
#: `takes`, the names of the arguments it takes (None: all of them); `by_position`, whether
#: it takes exactly those, in that order, as plain parameters (then they are passed by
#: position: the same binding, without building a keyword dict); `single`, the name of its
#: one argument when it takes one only, by position (then its view is passed alone: no
#: list, a direct call). A plain tuple, not a named one: unpacking a tuple subclass takes
#: CPython's generic path, ≈ 35 ns of every call (issue #16).
HookPlan = tuple[Callable[..., Any], tuple[str, ...] | None, bool, str | None]


_NO_PLANS: Final[Mapping[str, HookPlan]] = MappingProxyType({})
_CO_VARARGS: Final = 0x04
_CO_VARKEYWORDS: Final = 0x08
_NOTHING: Final[Any] = object()


def hook_plans(instance: Any, hooks: Collection[str], hook_args: Mapping[str, tuple[str, ...]],
               executor: Any = None) -> Mapping[str, HookPlan]:
    """The call plan of each hook in `hooks` of a plugin loaded in this process and run
    here: none when `instance` is None or `executor` (the registry's choice) is not the
    in-process executor (None: in-process, as the pipeline's default). A hook whose method
    cannot be read now has no plan; a call looks it up as before.

    A round (`dihya.sandbox.rounds`) runs in-process exactly the plugins that have a plan:
    a record is immutable, so its executor cannot change after its plans were made."""
    if instance is None or not hooks or not (executor is None
                                             or type(executor) is InProcessExecutor):
        return _NO_PLANS
    plans: dict[str, HookPlan] = {}
    for hook in hooks:
        try:
            method = getattr(instance, hook)
        except Exception:  # the plugin's own attribute lookup: the call will say it
            continue
        if callable(method):
            takes = hook_args.get(hook)
            by_position = _takes_by_position(method, takes)
            single = takes[0] if by_position and takes is not None and len(takes) == 1 else None
            plans[hook] = (method, takes, by_position, single)
    return plans


def _takes_by_position(method: Any, takes: tuple[str, ...] | None) -> bool:
    """True when calling `method(*values)` binds exactly what `method(**dict(zip(takes,
    values)))` does: a plain function's method whose parameters after `self` are `takes`,
    in order, none positional-only, no `*args` / `**kwargs`, no keyword-only ones."""
    code = getattr(getattr(method, "__func__", None), "__code__", None)
    if takes is None or code is None or getattr(method, "__self__", None) is None:
        return False
    return (code.co_posonlyargcount == 0 and code.co_kwonlyargcount == 0
            and not code.co_flags & (_CO_VARARGS | _CO_VARKEYWORDS)
            and code.co_varnames[1:code.co_argcount] == takes)


class HookTarget(Protocol):
    """What an executor needs of a plugin (a registry record is one): executors sit below
    the registry and never import it."""

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def instance(self) -> Any: ...

    @property
    def hook_args(self) -> Mapping[str, tuple[str, ...]]: ...

    @property
    def hook_plans(self) -> Mapping[str, HookPlan]: ...


class Remembered:
    """An executor's answer that is an earlier answer of the same plugin's hook to exactly
    the same input, which the pipeline froze and validated then (`value`): the sandbox's
    `"same"` answers (`dihya.sandbox.pool.Worker.call`). The pipeline takes it as it is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class HookRaised(FixedReasonError):
    """The hook raised in another process; the message is `ExceptionType: message`."""

    REASON = HookStatus.FAILED


class HookInvalidOutput(HookRaised):
    """The hook returned, but its value could not be handed back (not JSON data, text that
    is not valid Unicode): the plugin's output is invalid, reported as `invalid-output`."""

    REASON = HookStatus.INVALID_OUTPUT


#: The reason of a `SandboxViolation` (audited as `hook.sandbox-violation`).
SANDBOX_VIOLATION: Final = "sandbox-violation"

#: The error type a sandbox worker reports when the hook's value cannot be sent as JSON.
INVALID_OUTPUT_ERROR: Final = "InvalidOutput"


def is_invalid_output(exc: HookRaised) -> bool:
    """True when `exc` says the hook's value could not be handed back (the sandbox executor
    raises `HookInvalidOutput` for a worker's `InvalidOutput` error, by its type field)."""
    return isinstance(exc, HookInvalidOutput)


class HookTimeout(FixedReasonError):
    """The hook did not return within the deadline; its result, if any, is discarded."""

    REASON = HookStatus.TIMEOUT


class SandboxViolation(FixedReasonError, RuntimeError):
    """A sandbox worker died or broke the protocol during a call (it has been killed):
    audited as `hook.sandbox-violation`, not as an ordinary hook failure."""

    REASON = SANDBOX_VIOLATION


class HookUnavailable(FixedReasonError):
    """The plugin was switched off, removed or replaced after the registry snapshot this
    call comes from was taken: its runner is gone, so the hook is not called (`skipped`)."""

    REASON = HookStatus.SKIPPED


class HookExecutor(Protocol):
    """Calls one hook (or action method) of one plugin and returns what it returned.

    `kwargs` holds every argument of the hook's spec, by name; the implementation gets
    those it takes (`HookTarget.hook_args`; an action method gets them all). Raises
    `HookTimeout` past `timeout_s`, or whatever the hook raised. The caller validates the
    returned value; executors never trust it.
    """

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any: ...

    def call_at(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
                timeout_s: float, started: float) -> tuple[Any, float]:
        """`call`, for a caller that read `time.perf_counter()` as `started` just before:
        the value and the executor's own reading when the hook returned, so that one
        pair of clock reads serves both the deadline and the caller's timing."""
        ...


def views_for(takes: tuple[str, ...] | None, by_position: bool,
              kwargs: Mapping[str, Any]) -> tuple[list[Any] | None, dict[str, Any]]:
    """A hook's views (`cow.view`) of the arguments of `kwargs` it takes (`takes`, None: all
    of them): a list to pass by position when `by_position` and it takes them all, else
    (one it takes was not given: bound by name, as a keyword call does) a dict to pass by
    keyword."""
    if by_position:
        args = []
        for name in takes:  # type: ignore[union-attr]  # never None by position
            if name not in kwargs:
                break
            args.append(view(kwargs[name]))
        else:
            return args, {}
    return None, {name: view(kwargs[name]) for name in (kwargs if takes is None else takes)
                  if name in kwargs}


def arguments_for(record: HookTarget, hook: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of `kwargs` that `record`'s implementation of `hook` takes."""
    takes = record.hook_args.get(hook)
    if takes is None:
        return dict(kwargs)
    return {name: kwargs[name] for name in takes if name in kwargs}


class InProcessExecutor:
    """Calls hooks directly on the plugin instance held by the registry record.

    Each argument is handed over as `cow.view` makes it: a private copy-on-write view of
    frozen data, else a private deep copy. The return is given back as the hook made it
    (possibly one of those views); the pipeline freezes and validates it. The deadline
    runs from `started` (`call_at`; `call` reads it itself) to the hook's return.
    """

    __slots__ = ()
    kind: Final = "in-process"

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        return self.call_at(record, hook, kwargs, timeout_s, perf_counter())[0]

    def call_at(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
                timeout_s: float, started: float) -> tuple[Any, float]:
        # A hot path (issue #16): no per-call lookups, allocations only for the views (and
        # a log buffer only if the hook logs). `dihya.sandbox.rounds` inlines the same
        # steps for a whole round: keep the two alike.
        plan = record.hook_plans.get(hook)
        if plan is None:  # an action method, or a record made without its instance
            instance = record.instance
            if instance is None:
                raise RuntimeError(f"plugin {record.name!r} is not loaded in this process")
            method, takes, by_position, single = (getattr(instance, hook),
                                                  record.hook_args.get(hook), False, None)
        else:
            method, takes, by_position, single = plan
        # the view of a hook's only argument, passed by position (else `_NOTHING`)
        one: Any = _NOTHING if single is None else kwargs.get(single, _NOTHING)
        if type(one) is FrozenDict:  # `view`, inlined for the common case
            value = one
            plain = value._plain  # `plain_of`, inlined
            if plain is None:
                plain = value._plain = dict.copy(value)
            one = CowDict(plain)  # from an exact dict: C's fast path
            one.base = value
        elif one is not _NOTHING:
            one = view(one)
        else:
            args, copies = views_for(takes, by_position, kwargs)
        if CAPTURE_HANDLER not in PLUGIN_LOGGER.handlers:  # the plugin's `self.logger`
            install()
        stack = CALLS.stack  # `call_stack()`, inlined
        depth = len(stack)
        name = record.name
        entry: Any = name
        if WAITING and name in WAITING:  # records it made outside a call come first
            entry = call_entry(name)
        stack.append(entry)
        try:
            if one is not _NOTHING:
                result = method(one)
            else:
                result = method(*args) if args is not None else method(**copies)
        finally:
            ended = perf_counter()
            if len(stack) == depth + 1:
                logged = stack.pop()
            else:  # the hook left calls of its own open, or closed this one: unwind
                logged = stack[depth] if len(stack) > depth else entry
                del stack[depth:]
            # a buffer: it logged (or had waiting records)
            if logged is not name and isinstance(logged, CallBuffer):
                deliver(record, logged.take(), kwargs)
        if ended - started > timeout_s:
            raise HookTimeout(f"{hook} took {ended - started:.3f} s, the limit is "
                              f"{timeout_s} s")
        return result, ended
