"""One family of errors: every exception class of the core is a `DihyaError` carrying a
reason code, except the few a framework dictates (click's exit codes, an HTTP problem,
a console page). A new exception class that forgets the base fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dihya
from dihya.reasons import DihyaError, FixedReasonError

#: Exceptions shaped by a framework rather than by a reason code, and why.
FRAMEWORK_BOUND = {
    "dihya.cli._common.CheckFailed": "click.ClickException: exit 1 with a message",
    "dihya.cli._common.Usage": "click.ClickException: exit 2 with a message",
    "dihya.web.problems.ApiProblem": "an HTTP problem document (status, type, title)",
    "dihya.web.admin.guard.Denied": "an HTML error page of the console",
}


def core_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dihya.__path__, "dihya."):
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_the_walk_finds_the_errors() -> None:
    names = {c.__name__ for c in core_exception_classes()}
    assert {"ConfigError", "StoreError", "HookTimeout", "NeedsError", "CheckFailed"} <= names


@pytest.mark.parametrize("cls", core_exception_classes(),
                         ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_core_error_carries_a_reason(cls: type[BaseException]) -> None:
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    if qualified in FRAMEWORK_BOUND:
        assert not issubclass(cls, DihyaError)
        return
    assert issubclass(cls, DihyaError), (
        f"{qualified} is not a DihyaError: derive it from dihya.reasons.DihyaError (or "
        "FixedReasonError with a REASON), or list it in FRAMEWORK_BOUND with why")
    if issubclass(cls, FixedReasonError) and cls is not FixedReasonError:
        assert isinstance(cls.REASON, str) and cls.REASON, qualified
        assert cls.REASON.lower() == cls.REASON and " " not in cls.REASON, qualified


def test_a_fixed_reason_error_says_its_reason_and_message() -> None:
    from dihya.sandbox.executor import HookTimeout, SandboxViolation
    from dihya.sandbox.pool import WorkerRetired
    from dihya.store.faults import StoreFault, StoreUnavailable

    exc = HookTimeout("render took 3 s")
    assert (exc.reason, exc.message, str(exc)) == ("timeout", "render took 3 s",
                                                    "render took 3 s")
    assert SandboxViolation("x").reason == "sandbox-violation"
    assert isinstance(SandboxViolation("x"), RuntimeError)  # callers catching it still do
    # retired during a generation: skipped, though it is also a worker failure
    assert WorkerRetired("gone").reason == "skipped"
    fault = next(iter(StoreFault))
    assert StoreUnavailable(fault).reason == fault.value


def test_config_error_keeps_its_call_order() -> None:
    from dihya.config import ConfigError

    exc = ConfigError("dihya.toml:3: bad", "unreadable-config")
    assert (exc.reason, exc.message) == ("unreadable-config", "dihya.toml:3: bad")
    assert ConfigError("bad").reason == "invalid-config"


def test_a_missing_store_says_so() -> None:
    from dihya.store.faults import StoreFault, StoreMissing

    assert StoreMissing("no store at x").reason == StoreFault.STORE_MISSING.value
