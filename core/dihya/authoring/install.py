"""Installing and removing plugin wheels in the backend's own environment.

`plan_install` decides, before anything is installed, whether a wheel may be installed:
it reads the wheel (never importing it), checks its publisher signature against the
trusted publishers (or requires an explicit operator approval for an unsigned wheel),
checks that it declares a plugin, that it does not take over a name approved from another
distribution, that a signed upgrade comes from the publisher the allowlist names, that it
is not a downgrade, and that every requirement is already satisfied here (installs use
`--no-deps`: nothing else is fetched). `pip_install` then installs the staged copy with
this interpreter's pip, and `installed_fingerprint_problem` checks that the files on disk
hash to the wheel's fingerprint. The `dihya plugins install` command (`dihya.cli.publish`)
strings these together and records the allowlist entry.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from dihya.config import AllowEntry, Config
from dihya.gate.decide import inspect_files, requirement_problems, resolution_problem
from dihya.gate.discovery import DiscoveredPlugin, discover
from dihya.gate.signing import SigningError, Verified, WheelFacts, read_wheel, verify_wheel
from dihya.reasons import DihyaError, Reason

CORE_DISTRIBUTION: Final = "dihya-core"
PIP_TIMEOUT_S: Final = 600


class InstallRefused(DihyaError):
    """The wheel may not be installed (or was removed again); `reason` is a short code,
    `names` the plugins it concerns."""

    def __init__(self, reason: str, message: str, names: Sequence[str] = ()) -> None:
        super().__init__(reason, message)
        self.names = tuple(names)


@attrs.frozen
class InstallPlan:
    """What will be installed and approved, once every check before pip passed."""

    facts: WheelFacts
    names: tuple[str, ...]  # entry-point names in the plugin group
    verified: Verified | None
    previous: tuple[AllowEntry, ...]

    @property
    def publisher(self) -> str | None:
        return self.verified.publisher.name if self.verified else None


def plan_install(wheel: Path, config: Config, signature: Path | None,
                 approve: bool) -> InstallPlan:
    """Every check that can be made before installing; InstallRefused if one fails."""
    try:
        facts = read_wheel(wheel)
    except SigningError as exc:
        raise InstallRefused(exc.reason, str(exc)) from exc
    names = tuple(sorted(facts.entry_points.get(config.group, {})))
    if not names:
        raise InstallRefused("not-a-plugin", f"{wheel.name} declares no entry point in the "
                             f"group {config.group!r}: it is not a generation plugin")
    if canonicalize_name(facts.distribution) == CORE_DISTRIBUTION:
        raise InstallRefused("not-a-plugin", "dihya-core is not installed as a plugin")
    verified = None
    if signature is not None:
        try:
            verified = verify_wheel(facts, signature, config.publishers)
        except SigningError as exc:
            raise InstallRefused(exc.reason, str(exc), names) from exc
    elif not approve:
        raise InstallRefused(
            "unsigned", f"{wheel.name} ({facts.distribution} {facts.version}) is not signed; "
            f"its fingerprint is {facts.fingerprint}. Compare it with the one the publisher "
            "gave you, then install it with --approve (or pass --signature WHEEL.sig)", names)
    previous = tuple(e for n in names for e in config.entries_for(n))
    _check_takeover(facts, names, previous)
    _check_continuity(facts, names, previous, verified, approve)
    missing = unsatisfied_requirements(facts.requires)
    if missing:
        raise InstallRefused(
            Reason.MISSING_DEPENDENCY, f"{facts.distribution} {facts.version} needs what this "
            f"environment ({sys.prefix}) does not have: {'; '.join(missing)}. Install is "
            "--no-deps: install those first (and approve them, if they are plugins)", names)
    return InstallPlan(facts=facts, names=names, verified=verified, previous=previous)


def _check_takeover(facts: WheelFacts, names: Sequence[str],
                    previous: Sequence[AllowEntry]) -> None:
    dist = canonicalize_name(facts.distribution)
    for entry in previous:
        if canonicalize_name(entry.distribution) != dist:
            raise InstallRefused(
                Reason.DISTRIBUTION_MISMATCH, f"the name {entry.name!r} is approved from "
                f"{entry.distribution!r}, not {facts.distribution!r}; uninstall or revoke "
                f"{entry.name!r} first", names)
    for plugin in discover(_group_of(facts, names)):
        if plugin.name in names and canonicalize_name(plugin.distribution) != dist:
            raise InstallRefused(
                Reason.DUPLICATE_NAME, f"the plugin name {plugin.name!r} is already declared by "
                f"the installed {plugin.distribution} {plugin.version}; uninstall it first",
                names)


def _group_of(facts: WheelFacts, names: Sequence[str]) -> str:
    for group, eps in facts.entry_points.items():
        if set(names) <= set(eps):
            return group
    return ""  # pragma: no cover - names come from one group


def _check_continuity(facts: WheelFacts, names: Sequence[str], previous: Sequence[AllowEntry],
                      verified: Verified | None, approve: bool) -> None:
    """A signed upgrade must come from the publisher the allowlist names, and go forward."""
    if approve:
        return  # the operator vouches for this wheel explicitly
    for entry in previous:
        if entry.publisher and verified and verified.publisher.name != entry.publisher:
            raise InstallRefused(
                "publisher-changed", f"{entry.name} was installed from publisher "
                f"{entry.publisher!r}; this wheel is signed by {verified.publisher.name!r}. "
                "Pass --approve if you accept the new publisher", names)
        try:
            older = Version(facts.version) < Version(entry.version)
        except InvalidVersion:
            older = False
        if older:
            raise InstallRefused(
                "downgrade", f"{facts.distribution} {facts.version} is older than the "
                f"approved {entry.version} (an old signed release may have known flaws); "
                "pass --approve to downgrade on purpose", names)


def unsatisfied_requirements(requires: Sequence[str]) -> list[str]:
    """Requirements (after markers) that this interpreter's environment does not satisfy."""
    importlib.invalidate_caches()
    return requirement_problems(requires)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                          check=False)


def pip_install(wheel: Path, force: bool = False) -> None:
    """Install one local wheel into this interpreter's environment, fetching nothing
    (`force`: even over the same version, as a rollback to other bytes needs)."""
    done = _pip("install", "--no-deps", "--no-index", "--quiet",
                *(("--force-reinstall",) if force else ()), str(wheel))
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise InstallRefused("pip-failed", f"pip could not install {wheel.name}: "
                             f"{' / '.join(tail) or f'exit {done.returncode}'}")


def pip_uninstall(distribution: str) -> None:
    done = _pip("uninstall", "--yes", "--quiet", distribution)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise InstallRefused("pip-failed", f"pip could not uninstall {distribution}: "
                             f"{' / '.join(tail) or f'exit {done.returncode}'}")


def installed_plugins(distribution: str, group: str) -> list[DiscoveredPlugin]:
    """The installed entry points of `distribution` in `group`."""
    dist = canonicalize_name(distribution)
    return [p for p in discover(group) if canonicalize_name(p.distribution) == dist]


def installed_fingerprint_problem(plan: InstallPlan, group: str) -> str | None:
    """Why the installed files are not exactly the wheel's (None when they are)."""
    plugins = [p for p in installed_plugins(plan.facts.distribution, group)
               if p.name in plan.names]
    if {p.name for p in plugins} != set(plan.names):
        return f"after pip install, {plan.facts.distribution} does not declare {plan.names}"
    for plugin in plugins:
        if plugin.version != plan.facts.version:
            return (f"installed version {plugin.version}, the wheel says "
                    f"{plan.facts.version}")
        files, problem = inspect_files(plugin)
        if problem is not None or files is None:
            return f"{problem[0]}: {problem[1]}" if problem else "no files installed"
        if files.fingerprint != plan.facts.fingerprint:
            return (f"the installed files hash to {files.fingerprint}, the wheel to "
                    f"{plan.facts.fingerprint}")
        outside = resolution_problem(plugin, files)
        if outside:
            return outside
    return None


def installed_fingerprint(distribution: str, group: str) -> str | None:
    """The fingerprint of the installed files of `distribution` (None when it is not
    installed as a plugin or its files cannot be verified)."""
    for plugin in installed_plugins(distribution, group):
        files, problem = inspect_files(plugin)
        if problem is None and files is not None:
            return files.fingerprint
    return None


def installed_version(distribution: str) -> str | None:
    importlib.invalidate_caches()
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None
