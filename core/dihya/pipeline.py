"""One generation: validate needs -> before hooks -> core generator -> after hooks -> validate.

The core holds the needs, the code and the context as frozen data (`dihya.sandbox.cow`):
every hook gets a copy of it (the executor's job: a copy-on-write view in-process, JSON
through a pipe in the sandbox), and what a hook returns is frozen and, unless it is
exactly what the hook was given, validated again (of code, the files it set: those it
gave back as they were are the given, valid ones; `needs.validate_code_from`); an
exception, an invalid return or a timeout skips that plugin's contribution and is
reported, and the generation goes on unless the plugin's approval says `required`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import Any, Final, Protocol

import attrs
import msgspec

from dihya.canonical import canonical_bytes, canonical_sha256
from dihya.needs import (
    Problem,
    check_loaded_needs,
    check_needs,
    validate_code,
    validate_code_from,
    validate_needs,
)
from dihya.plugin import HOOK_API_VERSION
from dihya.reasons import DihyaError, FixedReasonError, HookStatus
from dihya.registry import PluginRecord, RegistrySnapshot
from dihya.sandbox.cow import FrozenDict, freeze, frozen_dict, frozen_list, view
from dihya.sandbox.executor import (
    HookExecutor,
    HookRaised,
    HookTimeout,
    HookUnavailable,
    InProcessExecutor,
    Remembered,
    SandboxViolation,
    is_invalid_output,
)

# the report row, made by the rounds too (`HookResult` is the pipeline's public name)
from dihya.sandbox.rounds import Check, call_round
from dihya.sandbox.rounds import HookResult as HookResult

log = logging.getLogger("dihya.pipeline")

OK: Final = HookStatus.OK
SKIPPED: Final = HookStatus.SKIPPED
HOOK_FAILED: Final = HookStatus.FAILED
TIMEOUT: Final = HookStatus.TIMEOUT
INVALID_OUTPUT: Final = HookStatus.INVALID_OUTPUT


class _Same:
    """A key that is its value's identity: the value is held (its id stays its own)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return type(other) is _Same and other.value is self.value


#: How many generations of the core generator each process remembers (by needs).
CORE_CODE_CACHE: Final = 32
#: How many generations' files each process remembers the canonical JSON of (by identity):
#: as many as the core generator's outputs it remembers, which are among them.
FILES_JSON_CACHE: Final = CORE_CODE_CACHE


@functools.lru_cache(maxsize=FILES_JSON_CACHE)
def frozen_files_json(key: _Same) -> tuple[bytes, str]:
    """The canonical JSON of the frozen files `key.value`, and its SHA-256 (what the HTTP
    answer sends and the audit event records), remembered for that very mapping: frozen
    data does not change, and both the core generator's output for needs sent again
    (`core_code`) and a plugin's answer taken again from the sandbox's memo
    (`executor.Remembered`) are that same mapping, so the same generation again hashes no
    50 KB. The mapping is held while remembered."""
    text = canonical_bytes(key.value)
    return text, hashlib.sha256(text).hexdigest()


@attrs.frozen
class GenerationResult:
    files: dict[str, str]
    plugins: tuple[HookResult, ...]
    needs_sha256: str
    ms: float
    #: the frozen mapping `files` is a copy of (`frozen_files_json` remembers its JSON)
    frozen: FrozenDict | None = attrs.field(default=None, repr=False, eq=False)

    def files_canonical(self) -> tuple[bytes, str]:
        """The files' canonical JSON (sorted keys, compact, UTF-8) and its SHA-256."""
        if self.frozen is not None:
            return frozen_files_json(_Same(self.frozen))
        text = canonical_bytes(self.files)
        return text, hashlib.sha256(text).hexdigest()

    def report(self) -> dict[str, Any]:
        return {"plugins": [h.to_json() for h in self.plugins], "needs_sha256": self.needs_sha256,
                "ms": round(self.ms, 3), "file_count": len(self.files)}


#: `GenerationFailed.reason` when a required plugin could not run because its sandbox
#: worker cannot start: the service is unavailable, not the plugin broken (HTTP 503)
SANDBOX_UNAVAILABLE: Final = "sandbox-start-failed"
#: The reason of any other `GenerationFailed`.
GENERATION_FAILED: Final = "generation-failed"


class GenerationFailed(DihyaError):
    """The generation could not complete; nothing is to be written. `reason` is
    `SANDBOX_UNAVAILABLE` when a required plugin's sandbox worker could not start,
    `GENERATION_FAILED` otherwise."""

    def __init__(self, stage: str, message: str, plugins: tuple[HookResult, ...],
                 problems: list[Problem] | None = None, reason: str | None = None) -> None:
        super().__init__(reason or GENERATION_FAILED, message)
        self.stage = stage
        self.plugins = plugins
        self.problems = problems or []


ExecutorFor = Callable[[PluginRecord], HookExecutor]
_IN_PROCESS = InProcessExecutor()


def default_executor(record: PluginRecord) -> HookExecutor:
    """The executor the registry chose for the plugin: its sandbox worker, or in-process."""
    return record.executor or _IN_PROCESS


#: The default `given` of a `HookCall`: no return skips the check.
_NOTHING: Final[Any] = object()


class HookCall(Protocol):
    """The guarded call `hook_caller` makes: `(ok, frozen value)`."""

    def __call__(self, record: PluginRecord, hook: str, kwargs: dict[str, Any],
                 check: Callable[[Any], list[Problem]] | None,
                 given: Any = _NOTHING) -> tuple[bool, Any]: ...


class HookCaller:
    """The guarded calls of one generation: of one hook of one plugin
    (`caller(record, hook, kwargs, check, given)`, a `HookCall`), or of one hook of each
    plugin of a list in turn (`caller.round(...)`).

    The executor copies the arguments and calls the hook; the return is frozen (a value
    that is not JSON data is `invalid-output`) and checked with `check` unless it is
    `given` itself (the frozen, already valid argument it got back), the call timed and
    reported in `report`; the frozen value is returned. A failure of a `required` plugin
    (other than in `on_generation_error`) calls `on_required_failure(message, plugin name,
    status)`. A plugin whose sandbox worker could not start is added to `unstartable`.

    One pair of clock reads times a call that returns: the pipeline's before the
    executor's call and the executor's when the hook returned (`HookExecutor.call_at`),
    which also serves the executor's deadline; a return that is validated is timed to the
    end of its validation, a failure to the end of its handling.

    A round with the registry's executors is run by `dihya.sandbox.rounds.call_round`,
    which times and checks each call the same way: the in-process plugins in its own loop,
    the others through `call`; this object is its `RoundGuard`. A slotted class with
    methods rather than closures: one is made per generation (issue #16).
    """

    __slots__ = ("_executor_for", "_on_required_failure", "_unstartable", "report",
                 "rounds", "timeout_s")

    def __init__(self, report: list[HookResult], executor_for: ExecutorFor, timeout: float,
                 on_required_failure: Callable[[str, str, str], None],
                 unstartable: set[str] | None = None) -> None:
        self.report = report
        self.timeout_s = timeout
        self._executor_for = executor_for
        self._on_required_failure = on_required_failure
        self._unstartable = unstartable
        #: the registry's choice of executors: the record's own, and rounds run by
        #: `call_round` (else a round is made of single calls)
        self.rounds = executor_for is default_executor

    def __call__(self, record: PluginRecord, hook: str, kwargs: dict[str, Any],
                 check: Callable[[Any], list[Problem]] | None,
                 given: Any = _NOTHING) -> tuple[bool, Any]:
        started = perf_counter()
        try:
            executor = ((record.executor or _IN_PROCESS) if self.rounds
                        else self._executor_for(record))
            value, ended = executor.call_at(record, hook, kwargs, self.timeout_s, started)
        except Exception as exc:
            failure = exc
        else:
            if check is None or type(value) is Remembered:
                # a return nobody uses (`on_generation_error`), or the sandbox's "same": the
                # plugin's earlier answer to this very input, frozen and validated then
                self.report.append(_new_row(HookResult, (record.name, hook, OK,
                                                         (ended - started) * 1000, None,
                                                         False)))
                return True, value.value if type(value) is Remembered else value
            done, frozen = self.settle(record, hook, value, check, given, started, ended)
            remember = getattr(executor, "remember", None)  # the sandbox's memo
            if done and remember is not None:
                remember(record, hook, value, frozen)
            return done, frozen
        # outside the `except`: a required plugin's failure raises without chaining
        return self.failed(record, hook, failure, (perf_counter() - started) * 1000)

    call = __call__  # the `RoundGuard`'s name for it

    def settle(self, record: PluginRecord, hook: str, value: Any,
               check: Callable[[Any], list[Problem]], given: Any, started: float,
               ended: float) -> tuple[bool, Any]:
        """Freeze and check what a hook returned (a view of `given` that froze back to it,
        unchanged, is `given` and is not checked) and report it: `(ok, frozen value)`."""
        try:
            try:
                value = freeze(value)
            except (TypeError, ValueError, RecursionError) as exc:
                raise _NotJson(str(exc)) from exc
            if value is not given:  # the very frozen input back: valid, unchanged
                problems = check(value)
                if problems:
                    raise _Invalid("; ".join(map(str, problems[:5])))
                ended = perf_counter()
        except Exception as exc:
            failure = exc
        else:
            self.report.append(_new_row(HookResult, (record.name, hook, OK,
                                                     (ended - started) * 1000, None, False)))
            return True, value
        return self.failed(record, hook, failure, (perf_counter() - started) * 1000)

    def failed(self, record: PluginRecord, hook: str, exc: Exception,
               ms: float) -> tuple[bool, Any]:
        """Report a call that raised, overran its deadline or returned something invalid
        (`exc` says which); a required plugin's failure calls `on_required_failure`."""
        violation = False
        if isinstance(exc, _Invalid):
            status, detail = INVALID_OUTPUT, str(exc)
        elif isinstance(exc, _NotJson):
            status = INVALID_OUTPUT
            detail = f"the hook returned something that is not JSON data: {exc.__cause__}"[:500]
        elif isinstance(exc, HookTimeout):
            status, detail = TIMEOUT, str(exc)
        elif isinstance(exc, HookUnavailable):  # switched off or replaced since the snapshot
            status, detail = SKIPPED, str(exc)[:500]
        elif isinstance(exc, HookRaised):
            # a value the worker could not send back is the plugin's invalid output
            status = INVALID_OUTPUT if is_invalid_output(exc) else HOOK_FAILED
            detail = str(exc)[:500]
        else:
            status, detail = HOOK_FAILED, f"{type(exc).__name__}: {exc}"[:500]
            violation = isinstance(exc, SandboxViolation)
            if self._unstartable is not None and _worker_cannot_start(exc):
                self._unstartable.add(record.name)
        self.report.append(_new_row(HookResult, (record.name, hook, status, ms, detail,
                                                 violation)))
        log.warning("hook %s of plugin %s: %s (%.1f ms)", hook, record.name, status, ms,
                    extra={"plugin": record.name, "action": hook, "reason": status,
                           "duration_ms": round(ms, 2)})
        if record.required and hook != "on_generation_error":
            self._on_required_failure(f"required plugin {record.name!r} {hook}: {status}",
                                      record.name, status)
        return False, None

    def round(self, records: Sequence[PluginRecord], hook: str, kwargs: dict[str, Any],
              chained: str | None = None, check_for: Callable[[Any], Check] | None = None,
              accepted: Callable[[Any], None] | None = None,
              later: Later | None = None) -> Any:
        """`hook` of each of `records` that implements it, in order, each guarded and
        reported: see `dihya.sandbox.rounds.call_round` (the same arguments)."""
        if self.rounds:
            return call_round(records, hook, kwargs, chained, check_for, self, accepted, later)
        return round_by_calls(self, records, hook, kwargs, chained, check_for, accepted, later)


#: `HookResult`'s own `__new__`, without its keyword handling
_new_row: Final = tuple.__new__

#: The arguments a round leaves out of its `kwargs` until a call may need them
#: (`call_round`'s `later`): a generation's context.
Later = Callable[[], Mapping[str, Any]]


def round_by_calls(call: HookCall, records: Sequence[PluginRecord], hook: str,
                   kwargs: dict[str, Any], chained: str | None = None,
                   check_for: Callable[[Any], Check] | None = None,
                   accepted: Callable[[Any], None] | None = None,
                   later: Later | None = None) -> Any:
    """A round (`HookCaller.round`) made of single guarded calls: for a `call` that is not
    a `HookCaller`, or executors other than the registry's (`later`'s arguments are made
    before the first call)."""
    if (chained is None) != (check_for is None):
        raise ValueError("a chained round needs the check of its returns, and only it")
    if later is not None and records:
        kwargs = {**kwargs, **later()}
    given = kwargs[chained] if chained is not None else _NOTHING
    check = check_for(given) if check_for is not None else None
    for record in records:
        if hook in record.hooks:
            ok, value = call(record, hook, kwargs, check, given)
            if ok and chained is not None and value is not given:
                given = value
                kwargs = {**kwargs, chained: value}
                if accepted is not None:
                    accepted(value)
                check = check_for(given)  # type: ignore[misc]  # given with `chained`
    return given if chained is not None else None


#: The guarded calls of one generation: `HookCaller` itself (the same arguments), not a
#: function around it (one Python frame less per generation, issue #16).
hook_caller: Final = HookCaller


class _Invalid(FixedReasonError):
    """The hook's return failed its check (the message says how)."""

    REASON = HookStatus.INVALID_OUTPUT


class _NotJson(FixedReasonError):
    """A hook returned something `freeze` refused (the cause says what)."""

    REASON = HookStatus.INVALID_OUTPUT


def generation_context(records: Sequence[PluginRecord], role: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
    """The `context` argument of every hook of one generation (no personal data), frozen.

    Built frozen (`cow.frozen_dict`) rather than built and then frozen: ≈ 2 µs of every
    round (issue #16); a role or request id that is text or None is frozen as it is.
    A generation makes it only when a hook may take it (`LazyContext`)."""
    return frozen_dict({
        "hook_api_version": HOOK_API_VERSION,
        "request_id": (request_id if request_id is None or type(request_id) is str
                       else freeze(request_id)),
        "role": role if role is None or type(role) is str else freeze(role),
        "plugins": frozen_list([str(r.name) for r in records])})


class LazyContext:
    """A generation's `context` (`generation_context`), made the first time a hook may take
    it and then kept for the generation's other rounds: most hooks take the needs or the
    code alone, and a generation whose hooks take no context need not make one (≈ 0.8 µs
    for 10 plugins, as much as a third of a round's own cost: issue #16). Called, it is a
    round's `later`: `{"context": the context}`."""

    __slots__ = ("_made", "_records", "_request_id", "_role")

    def __init__(self, records: Sequence[PluginRecord], role: str | None = None,
                 request_id: str | None = None) -> None:
        self._records = records
        self._role = role
        self._request_id = request_id
        self._made: dict[str, Any] | None = None

    def value(self) -> dict[str, Any]:
        """The context, made on the first call."""
        if self._made is None:
            self._made = generation_context(self._records, self._role, self._request_id)
        return self._made

    def __call__(self) -> Mapping[str, Any]:
        return {"context": self.value()}


def _worker_cannot_start(exc: Exception) -> bool:
    from dihya.sandbox.pool import WorkerStartError

    return isinstance(exc, WorkerStartError) and exc.reason == SANDBOX_UNAVAILABLE


def run_before_generation(records: Sequence[PluginRecord], needs: dict[str, Any],
                          call: HookCall,
                          accepted: Callable[[dict[str, Any]], None] | None = None,
                          context: dict[str, Any] | LazyContext | None = None
                          ) -> dict[str, Any]:
    """The `before_generation` round: each plugin gets the needs the previous one returned.

    `needs` must be valid (the pipeline checked them, and each accepted return was
    validated). A return that freezes back to the very needs the plugin was given (it
    changed nothing) is therefore valid and skips the schema validation; any other return
    is validated in full. `accepted` is told each accepted return that changed the needs,
    as it happens. The needs returned are frozen (`dihya.sandbox.cow`). `context`: the
    hooks' context, or the `LazyContext` that makes it (None: the context of `records`,
    made only if a hook may take it).
    """
    if type(needs) is not FrozenDict:  # `freeze`, which gives frozen data back as it is
        needs = freeze(needs)
    later: Later | None = None
    if context is None:
        def made() -> Mapping[str, Any]:  # a closure: cheaper to make than a `LazyContext`
            return {"context": generation_context(records)}
        later = made
        kwargs = {"needs": needs}  # the executors never change it
    elif type(context) is LazyContext:
        later = context
        kwargs = {"needs": needs}
    else:
        kwargs = {"needs": needs, "context": context if type(context) is FrozenDict
                  else freeze(context)}
    if type(call) is HookCaller and call.rounds:  # `HookCaller.round`, without its frame
        out: dict[str, Any] = call_round(records, "before_generation", kwargs, "needs",
                                         _needs_check, call, accepted, later)
    elif isinstance(call, HookCaller):
        out = call.round(records, "before_generation", kwargs, "needs", _needs_check, accepted,
                         later)
    else:
        out = round_by_calls(call, records, "before_generation", kwargs, "needs", _needs_check,
                             accepted, later)
    return out


def _needs_check(needs: Any) -> Check:
    """The check of a return that replaces `needs`: the needs schema, in full."""
    return validate_needs


def _code_check(code: Any) -> Check:
    """The check of a return that replaces `code`: the files it gave back as they were
    (the very text objects) passed already."""
    return functools.partial(validate_code_from, base=code)


class _InvalidCode(FixedReasonError):
    """The generator's output failed `validate_code`."""

    REASON = GENERATION_FAILED

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"the generator's output has {len(problems)} problems")
        self.problems = problems


def _checked_code(code: Any) -> dict[str, str]:
    """`code` validated and frozen; `_InvalidCode` otherwise."""
    problems = validate_code(code)
    if problems:
        raise _InvalidCode(problems)
    frozen: dict[str, str] = freeze(code)
    return frozen


@functools.lru_cache(maxsize=CORE_CODE_CACHE)
def core_code(needs_text: str) -> dict[str, str]:
    """The core generator's code for the needs whose JSON (`_exact_json`) is `needs_text`,
    validated and frozen. The generator is a pure function of the needs, so the last
    `CORE_CODE_CACHE` results are remembered: the same needs again (a client regenerating
    a project) cost a lookup instead of rendering every template. Frozen data, so the
    cached mapping is shared safely; an invalid result raises and is not remembered."""
    from dihya.generator import generate as core_generate

    return _checked_code(core_generate(json.loads(needs_text)))


@functools.lru_cache(maxsize=CORE_CODE_CACHE)
def _checked_loaded_needs(needs_text: str) -> bool:
    """Check the needs whose `_exact_json` is `needs_text` (taken from a document
    `load_json` parsed): True, else `NeedsError`. Whether needs are valid is a pure function
    of their value, and that text tells every JSON value apart (key order, `1`, `1.0`,
    `true`, every character), so the last `CORE_CODE_CACHE` valid ones are remembered:
    the same needs again cost a lookup (a dict's hash and, on a hit, a full comparison of
    the text), as their generation does (`core_code`). Nothing the caller says is
    trusted: the key is the needs' own text, made here. Invalid needs raise, and an
    exception is not remembered. Checked on the needs read back from the text: the same
    value."""
    check_loaded_needs(json.loads(needs_text))
    return True


@functools.lru_cache(maxsize=CORE_CODE_CACHE)
def frozen_needs(needs_text: str) -> dict[str, Any]:
    """The needs whose `_loaded_json` / `_exact_json` text is `needs_text`, frozen (what
    the plugins' hooks get views of), remembered as `core_code` remembers their code: that
    text reads back as exactly these needs, and frozen data is shared safely, so the same
    needs again are not frozen again (issue #16)."""
    frozen: dict[str, Any] = freeze(json.loads(needs_text))
    return frozen


def _exact_json(value: Any) -> str:
    """JSON that tells apart whatever the generator could: key order kept, `1`, `1.0` and
    `true` distinct (the key of `core_code`)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


#: msgspec's JSON, key order kept (`_loaded_json`)
_LOADED_JSON: Final = msgspec.json.Encoder()


def _loaded_json(value: Any) -> str:
    """`_exact_json`'s job for needs `load_json` parsed, in one C pass: a text that
    `json.loads` reads back as exactly `value` (key order, `1` / `1.0` / `true`, every
    character, floats by their shortest exact form), so it tells apart whatever the
    generator could as well. The text need not be `_exact_json`'s: `core_code` and
    `_checked_loaded_needs` read the needs back from whichever text is their key, so equal
    texts are equal needs. What msgspec cannot write exactly (a lone surrogate) goes to
    `_exact_json`; NaN and infinities (which msgspec would write as `null`) cannot come
    from `load_json`, which refuses them, nor past the view's canonical hash."""
    try:
        return _LOADED_JSON.encode(value).decode("utf-8")
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
        return _exact_json(value)


#: `needs_digest`'s memo: `_loaded_json` text -> (canonical bytes' length, SHA-256)
_DIGESTS: dict[str, tuple[int, str]] = {}


def needs_digest(needs: Any) -> tuple[int, str]:
    """The length and SHA-256 of the canonical JSON of needs `load_json` parsed (the audit
    event's `needs_bytes` and `needs_sha256`), remembered for the last `CORE_CODE_CACHE`
    needs by their `_loaded_json` text as `core_code` is: that text reads back as exactly
    these needs, so equal texts have equal canonical JSON. Needs sent again cost one
    msgspec pass and a lookup instead of the canonical type walk, encoding and hash."""
    text = _loaded_json(needs)
    found = _DIGESTS.get(text)
    if found is None:
        data = canonical_bytes(needs)
        found = (len(data), hashlib.sha256(data).hexdigest())
        if len(_DIGESTS) >= CORE_CODE_CACHE:
            _DIGESTS.clear()
        _DIGESTS[text] = found
    return found


def run_generation(needs: Any, snapshot: RegistrySnapshot, *, role: str | None = None,
                   executor_for: ExecutorFor = default_executor,
                   generate: Callable[[dict[str, Any]], dict[str, str]] | None = None,
                   request_id: str | None = None, needs_sha256: str | None = None,
                   loaded: bool = False, audited: bool = False) -> GenerationResult:
    """Generate code for `needs` with the active plugins of `snapshot`.

    `role` is the caller's role for the per-plugin ACL (None: the operator, who may run
    every active plugin); it and `request_id` reach the hooks in their `context`. Raises
    `NeedsError` for invalid needs and `GenerationFailed`
    when a required plugin fails or the generator's output is invalid.

    What a caller that parsed the needs already knows is not worked out again: with
    `loaded`, `needs` come from a document `dihya.needs.load_json` parsed (its depth is
    checked); `needs_sha256` is their canonical SHA-256 (the HTTP view hashes them for its
    audit event before this runs; the report's `needs_sha256` is that value).

    The generation's summary (needs hash, files, bytes, plugins ok, duration) is logged on
    `dihya.pipeline` at INFO, or at DEBUG with `audited`: the caller records the generation
    as an audit event whose line carries the same fields (the HTTP view), so a server does
    not write it twice.
    """
    start = time.perf_counter()
    needs_text: str | None = None  # `_exact_json` of the needs as checked
    if loaded:
        needs_text = _loaded_json(needs)
        _checked_loaded_needs(needs_text)
    else:
        check_needs(needs)
    needs_hash = needs_sha256 or canonical_sha256(needs)
    timeout = snapshot.config.hook_timeout_s
    report: list[HookResult] = []
    runnable = []
    for name in dict.fromkeys(e.name for e in snapshot.config.allow):
        # approved but not running: said once per plugin (however many versions are
        # approved), and fatal when required (by the installed version's entry, else by any)
        other = snapshot.get(name)
        if other is not None and other.active:
            continue
        state = f"{other.status}/{other.reason}" if other else "not-installed"
        report.append(HookResult(name, "*", SKIPPED, 0.0, state))
        required = (other.required if other is not None and other.approved_fingerprint
                    else any(e.required for e in snapshot.config.entries_for(name)))
        if required:
            reason = (SANDBOX_UNAVAILABLE if other is not None
                      and other.reason == SANDBOX_UNAVAILABLE else None)
            raise GenerationFailed("plugin", f"required plugin {name!r} is {state}",
                                   tuple(report), reason=reason)
    for record in snapshot.active:
        if role is not None and record.roles is not None and role not in record.roles:
            report.append(HookResult(record.name, "*", SKIPPED, 0.0, "acl"))
        else:
            runnable.append(record)

    # made when a hook first may take it, then kept for the generation's other rounds
    context = LazyContext(runnable, role, request_id)
    unstartable: set[str] = set()  # plugins whose sandbox worker could not start
    call = hook_caller(report, executor_for, timeout,
                       lambda message, plugin, status: _fail(message, "plugin", None, plugin,
                                                             status),
                       unstartable)

    def _fail(message: str, stage: str, problems: list[Problem] | None = None,
              plugin: str | None = None, kind: str = "invalid-code") -> None:
        error = {"stage": stage, "type": kind, "plugin": plugin}
        call.round(runnable, "on_generation_error", {"error": error, "needs": needs},
                   later=context)
        raise GenerationFailed(stage, message, tuple(report), problems,
                               SANDBOX_UNAVAILABLE if plugin in unstartable else None)

    def accept(value: dict[str, Any]) -> None:
        nonlocal needs  # what `_fail` hands to on_generation_error
        needs = value

    if runnable:  # frozen for the plugins (read-only views), and maybe changed by them
        needs = given = (frozen_needs(needs_text) if needs_text is not None
                         else freeze(needs))
        needs = run_before_generation(runnable, needs, call, accept, context)
        if needs is not given:
            needs_text = None
    elif generate is not None:
        needs = freeze(needs)  # a test's generator gets a view, as plugins do
    # with no plugin to run the needs reach nothing but `_exact_json`: no frozen copy made
    if needs_text is None:
        needs_text = _exact_json(needs)
    try:
        code = (core_code(needs_text) if generate is None
                else _checked_code(generate(view(needs))))
    except _InvalidCode as exc:
        _fail("the core generator produced invalid code", "generator", exc.problems)
        raise  # not reached: _fail raises

    kwargs = {"code": code, "needs": needs}  # the executors never change it
    code = call.round(runnable, "after_generation", kwargs, "code", _code_check, later=context)
    elapsed = (time.perf_counter() - start) * 1000
    # the frozen files (the core's remembered output, a plugin's answer): their JSON is
    # remembered by identity (`frozen_files_json`)
    result = GenerationResult(dict(code), tuple(report), needs_hash, elapsed,
                              code if type(code) is FrozenDict else None)
    level = logging.DEBUG if audited else logging.INFO
    if log.isEnabledFor(level):
        code_bytes = sum(len(t) for t in code.values())
        plugins_ok = sum(h.status == OK for h in report)
        # `log.info` without its look-up of the caller's frame (this function, always);
        # the request id given, so the server's filter need not find it in Flask's context
        log.handle(log.makeRecord(
            log.name, level, __file__, _LOG_LINE_NO,
            "generation needs_sha256=%s files=%d bytes=%d plugins_ok=%d ms=%.1f",
            (needs_hash[:16], len(code), code_bytes, plugins_ok, elapsed), None,
            "run_generation",
            {"needs_sha256": needs_hash, "files": len(code), "code_bytes": code_bytes,
             "plugins_ok": plugins_ok, "duration_ms": round(elapsed, 2),
             "request_id": request_id}))
    return result


_LOG_LINE_NO: Final = run_generation.__code__.co_firstlineno
