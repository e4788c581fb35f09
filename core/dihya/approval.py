"""Approving an installed plugin by review: what exactly would be approved, then the record.

`plan_approval` says what an approval of the installed plugin NAME would record (entry
point, distribution, version, fingerprint, files), what the previous approval was, which
files changed since the files it approved (when their list was recorded, see
`dihya.store.filelists`) and who could have signed it; or why it cannot be approved. Its checks
are the gate's own (`dihya.gate.assess`, run with the candidate as the only allowlist
entry), so an approval is refused for every reason the gate would refuse the plugin at
load. `approve` then loads the class in a sandbox worker (never in this process), as
`dihya plugins approve` does, records what the worker said (`dihya.store.facts`: listings
read it instead of starting the worker) and writes the allowlist entry, keeping the
config's comments.
The operator console uses both; the reviewed fingerprint must still be the installed one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from dihya.config import AllowEntry, Config, Mode
from dihya.config.edit import Approval, ApprovalRefused, edit_document, record_approval
from dihya.gate.decide import (
    FAILED,
    REFUSED,
    PluginNotFound,
    assess,
    find_installed,
    verified_files,
)
from dihya.gate.discovery import DiscoveredPlugin
from dihya.reasons import DihyaError, Reason

if TYPE_CHECKING:  # the `dihya.store` package brings SQLAlchemy: imported where it is used
    from dihya.store import Store
    from dihya.store.filelists import FileDiff, FileList


class CannotApprove(DihyaError):
    """The plugin cannot be approved as it is; `reason` is a reason code."""


@attrs.frozen
class ApprovalPlan:
    """What approving the installed plugin `name` would record, and what it replaces."""

    name: str
    plugin: DiscoveredPlugin | None
    fingerprint: str | None
    files: FileList | None
    previous: tuple[AllowEntry, ...]
    # the files of the previous approval, when recorded, and what changed since them
    previous_files: FileList | None
    changes: FileDiff | None
    # trusted publishers who may sign this distribution (`[[plugins.publishers]]`)
    publishers: tuple[str, ...]
    problem: tuple[str, str] | None  # (reason code, message) when it cannot be approved

    @property
    def approvable(self) -> bool:
        return self.problem is None

    @property
    def already_approved(self) -> bool:
        """True when an allowlist entry names these very files."""
        return any(e.fingerprint == self.fingerprint for e in self.previous)

    @property
    def default_mode(self) -> Mode:
        return self.previous[0].mode if self.previous else "sandbox"

    @property
    def default_roles(self) -> tuple[str, ...] | None:
        return self.previous[0].roles if self.previous else None

    @property
    def default_required(self) -> bool:
        return any(e.required for e in self.previous)


def plan_approval(name: str, config: Config, store: Store | None = None,
                  path: Sequence[str] | None = None) -> ApprovalPlan:
    """What approving `name` as installed now would record, or why it cannot be."""
    from dihya.store.filelists import diff, list_files, recall

    previous = config.entries_for(name)
    try:
        plugin, duplicate = find_installed(name, config.group, path), None
    except PluginNotFound as exc:
        if not exc.matches:
            raise CannotApprove(exc.reason, exc.message) from exc
        plugin, duplicate = exc.matches[0], (exc.reason, exc.message)
    publishers = tuple(p.name for p in config.publishers if p.may_sign(plugin.distribution))
    installed, refusal = verified_files(plugin, path)  # the gate's own words for a refusal
    files = list_files(plugin, installed) if installed is not None else None
    empty = ApprovalPlan(name, plugin, None, files, previous, None, None, publishers, None)
    if duplicate is not None:
        return attrs.evolve(empty, problem=duplicate)
    if refusal is not None:
        return attrs.evolve(empty, problem=refusal)
    if files is None:
        return attrs.evolve(empty, problem=(Reason.MISSING_FILE, "the installed files cannot be "
                                            "read, or changed while they were read"))
    candidate = AllowEntry(name=name, distribution=plugin.distribution,
                           version=plugin.version, fingerprint=files.fingerprint)
    verdict = assess(plugin, attrs.evolve(config, allow=(candidate,)), frozenset(), path)
    problem = None
    if verdict.status in (REFUSED, FAILED):
        problem = (verdict.reason or "refused", verdict.message)
    old = next((e for e in previous if e.fingerprint != files.fingerprint), None)
    old_files = recall(store, old.fingerprint) if store is not None and old else None
    return ApprovalPlan(name, plugin, files.fingerprint, files, previous, old_files,
                        diff(old_files, files) if old_files is not None else None,
                        publishers, problem)


@attrs.frozen
class CheckedClass:
    """What checking a plugin's class in a sandbox worker found."""

    safe: bool  # the class says safe = True: it may run in-process
    facts: dict[str, Any]  # what the worker said, as `dihya.store.facts` records it


def inspect_class(plugin: DiscoveredPlugin, fingerprint: str, mode: str, config: Config,
                  warn: Callable[[str], object] | None = None) -> CheckedClass:
    """Load the plugin in a sandbox worker (never in this process) and check its class;
    CannotApprove says why not. `warn` is told of each deprecated hook or argument the
    class uses."""
    from dihya.registry import facts_of
    from dihya.sandbox.admission import checked_meta
    from dihya.sandbox.pool import Worker, WorkerSpec, WorkerStartError

    # the worker must find the plugin where this process found it: the plugin's own
    # site directory when it is not one of this Python's (a custom site, tests)
    site = plugin.site_packages
    extra = () if site is None or str(site).startswith(
        (sys.prefix, sys.base_prefix)) else (str(site),)
    try:
        # told the distribution verified here, the worker checks that one only (#16)
        worker = Worker(WorkerSpec(plugin.group, plugin.name, fingerprint, extra,
                                   os.fspath(plugin.dist_info or "")), config.sandbox)
    except WorkerStartError as exc:
        raise CannotApprove(exc.reason, exc.message) from exc
    try:
        meta = checked_meta(worker.hello.meta)
    except ValueError as exc:
        raise CannotApprove(Reason.INVALID_PLUGIN, str(exc)) from exc
    finally:
        worker.close()
    if warn is not None:
        for warning in meta["deprecations"]:
            warn(warning)
    safe = meta.get("safe") is True
    if mode == "in-process" and not safe:
        raise CannotApprove(Reason.UNSAFE_IN_PROCESS, "its class says safe = False: approve it "
                            "in sandbox mode (--mode sandbox)")
    return CheckedClass(safe, facts_of(worker.hello))


def remember_facts(store: Store, plugin: DiscoveredPlugin, fingerprint: str,
                   facts: dict[str, Any]) -> None:
    """Record what the checking worker said (`dihya.store.facts`), so that listings need
    not start it again; a store that fails is left alone (a listing then starts the worker
    once and records it)."""
    from dihya.store.facts import record_facts
    from dihya.store.faults import StoreError

    with contextlib.suppress(StoreError):
        record_facts(store, plugin.group, plugin.name, fingerprint, facts)


def check_class(plugin: DiscoveredPlugin, fingerprint: str, mode: str, config: Config,
                warn: Callable[[str], object] | None = None,
                facts: Store | None = None) -> bool:
    """`inspect_class`, recording what the worker said in `facts` (a store) if given; True
    when the class says safe = True (it may run in-process)."""
    checked = inspect_class(plugin, fingerprint, mode, config, warn)
    if facts is not None:
        remember_facts(facts, plugin, fingerprint, checked.facts)
    return checked.safe


def approve(plan: ApprovalPlan, config: Config, *, reviewed: str, mode: Mode,
            roles: tuple[str, ...] | None, required: bool,
            facts: Store | None = None) -> AllowEntry:
    """Check the class and record the approval of the files `plan` describes.

    `reviewed` is the fingerprint the operator saw: if the installed files hash to
    anything else now, nothing is approved.
    """
    if plan.problem is not None:
        raise CannotApprove(*plan.problem)
    assert plan.plugin is not None and plan.fingerprint is not None
    if reviewed != plan.fingerprint:
        raise CannotApprove(Reason.FINGERPRINT_MISMATCH, "the installed files changed since you "
                            f"reviewed them (now {plan.fingerprint}): review them again")
    safe = check_class(plan.plugin, plan.fingerprint, mode, config, facts=facts)
    # the same locked transaction as `dihya plugins approve`: only this approval's fields,
    # applied to the file as it is now; a re-approval keeps the on/off switch
    approval = Approval(name=plan.name, distribution=plan.plugin.distribution,
                        version=plan.plugin.version, fingerprint=plan.fingerprint, mode=mode,
                        roles=roles, required=required, safe=safe)
    try:
        with edit_document(config.path) as doc:
            return record_approval(doc, approval)
    except ApprovalRefused as exc:
        raise CannotApprove(Reason.UNSAFE_IN_PROCESS, str(exc)) from exc
