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

from collections.abc import Mapping
from time import perf_counter
from typing import Any, Final, Protocol

from dihya.pluginlog import begin_call, deliver, end_call
from dihya.reasons import FixedReasonError, HookStatus
from dihya.sandbox.cow import view


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
    (possibly one of those views); the pipeline freezes and validates it.
    """

    __slots__ = ()
    kind: Final = "in-process"

    def call(self, record: HookTarget, hook: str, kwargs: Mapping[str, Any],
             timeout_s: float) -> Any:
        instance = record.instance
        if instance is None:
            raise RuntimeError(f"plugin {record.name!r} is not loaded in this process")
        method = getattr(instance, hook)
        takes = record.hook_args.get(hook)
        copies = {}
        if takes is None:
            for name, value in kwargs.items():
                copies[name] = view(value)
        else:
            for name in takes:
                if name in kwargs:
                    copies[name] = view(kwargs[name])
        logged, token = begin_call(record.name)  # the plugin's `self.logger` records
        start = perf_counter()
        try:
            result = method(**copies)
        finally:
            elapsed = perf_counter() - start
            end_call(token)
            if logged.records or logged.dropped:  # else nothing to take
                deliver(record, logged.take(), kwargs)
        if elapsed > timeout_s:
            raise HookTimeout(f"{hook} took {elapsed:.3f} s, the limit is {timeout_s} s")
        return result
