"""`dihya.testing`: test a plugin through the real core, exactly as the backend runs it.

`run_plugin(PluginClass or entry-point name, needs, mode=...)` runs one generation with
that plugin alone, through the real contract check (`validate_plugin_class`), the real
pipeline (`run_generation`: copies, validation of every return, the core generator) and,
with `mode="sandbox"`, the real gate and a real sandbox worker. Installed from a wheel (as
tox installs it), the plugin runs from its installed files; installed editable (`pip
install -e .`), from its source tree: its files are copied into a private site directory
with a RECORD, then fingerprinted, gated and loaded in the worker exactly as a wheel's
files would be (a test mode only: the backend never accepts an editable install). The
result carries the files, the report and the needs the core generator got;
`assert_hook_ok` and friends check the report with messages that show it.

The pytest plugin `dihya.testing.pytest_plugin` (registered through the core's `pytest11`
entry point, so it is active wherever dihya-core is installed) adds the fixtures
`sample_needs` and `minimal_needs`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
import importlib.util
import json
import re
import shutil
import sys
import tempfile
import time
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from dihya.config import AllowEntry, Config, SandboxSettings
from dihya.gate.decide import (
    ACTIVE,
    PluginNotFound,
    dependency_problems,
    find_installed,
    verified_files,
)
from dihya.gate.discovery import DiscoveredPlugin, discover
from dihya.pipeline import OK, GenerationFailed, GenerationResult, HookResult, run_generation
from dihya.plugin import (
    DEFAULT_GROUP,
    GenerationPluginBase,
    hook_arguments,
    implemented_hooks,
    plugin_actions,
    validate_plugin_class,
)
from dihya.reasons import DihyaError, Reason
from dihya.registry import PluginRecord, RegistrySnapshot, build_registry
from dihya.sandbox.executor import InProcessExecutor

__all__ = [
    "MODES",
    "PluginNotAdmitted",
    "PluginRun",
    "action_input_problems",
    "assert_generation_ok",
    "assert_hook_ok",
    "assert_hook_status",
    "check_plugin_class",
    "minimal_needs",
    "run_plugin",
    "sample_needs",
]

Mode = Literal["in-process", "sandbox"]
MODES: Final = ("in-process", "sandbox")
_CONFIG_PATH: Final = Path("dihya-testing.toml")  # never read: the config is built in memory


class PluginNotAdmitted(DihyaError):
    """The plugin could not be run: not installed, refused by the gate or failed to load.

    `reason` is the status reason the backend would report (`not-installed`,
    `outside-distribution`, `missing-dependency`, `import-error`, `invalid-plugin`, ...).
    """

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@attrs.frozen
class PluginRun:
    """One generation with the plugin: what the backend would write and report.

    `files` is empty and `failure` set when the generation failed (a `required` plugin
    failed, or the core generator's output was invalid). `needs` is what the core
    generator got (after every `before_generation`), None if it did not run. `record` is
    the plugin's registry record (status, mode, hooks, isolation layers).
    """

    files: dict[str, str]
    plugins: tuple[HookResult, ...]
    needs: dict[str, Any] | None
    record: PluginRecord
    failure: GenerationFailed | None = None
    result: GenerationResult | None = None
    #: The source tree an editable install was run from (`mode="sandbox"`), else None.
    source: Path | None = None

    @property
    def ok(self) -> bool:
        """The generation succeeded and every hook call was `ok`."""
        return self.failure is None and all(h.status == OK for h in self.plugins)

    def hook(self, name: str, hook: str) -> HookResult | None:
        """The report line of `hook` of plugin `name` (the last one), if it was called."""
        found = [h for h in self.plugins if h.name == name and h.hook == hook]
        return found[-1] if found else None

    def report(self) -> dict[str, Any]:
        """The report as the CLI and the HTTP API give it."""
        if self.result is not None:
            return self.result.report()
        failure = self.failure
        return {"error": str(failure), "stage": failure.stage if failure else None,
                "plugins": [h.to_json() for h in self.plugins],
                "problems": [str(p) for p in (failure.problems if failure else [])]}


def _data(name: str) -> Any:
    return json.loads(resources.files("dihya.testing").joinpath("data", name).read_text("utf-8"))


def sample_needs() -> dict[str, Any]:
    """A fresh copy of `examples/needs/todo.json`: two entities, every field type."""
    return copy.deepcopy(_data("todo.json"))


def minimal_needs() -> dict[str, Any]:
    """The smallest valid needs: one entity with one field."""
    return {"project": "shop", "stack": "flask-api",
            "entities": [{"name": "Item", "fields": [{"name": "label", "type": "string"}]}]}


def check_plugin_class(cls: object, where: str | None = None) -> tuple[str, ...]:
    """Check `cls` with the loader's own contract check; return the hooks it implements.

    Raises `dihya.plugin.InvalidPluginError` with the loader's message otherwise.
    """
    checked = validate_plugin_class(cls, where or f"class {getattr(cls, '__qualname__', cls)}")
    return implemented_hooks(checked)


def run_plugin(plugin: type[GenerationPluginBase] | str, needs: Any = None, *,
               mode: Mode = "in-process", name: str | None = None, required: bool = False,
               hook_timeout_s: float = 2.0, role: str | None = None,
               group: str = DEFAULT_GROUP, sandbox: SandboxSettings | None = None,
               path: Sequence[str] | None = None, from_source: bool = True) -> PluginRun:
    """Run one generation of `needs` (default: `sample_needs()`) with this plugin alone.

    `plugin` is the plugin class or the entry-point name of an installed plugin.

    * `mode="in-process"`: the class is checked by `validate_plugin_class`, instantiated
      and called through the in-process executor, as for an operator's
      `--mode in-process` approval (that `safe` is True is not required here).
    * `mode="sandbox"`: the plugin must be installed. It is fingerprinted, approved in an
      in-memory config and loaded by `build_registry` in a real sandbox worker, exactly as
      the backend does; a refusal or load failure raises `PluginNotAdmitted` with the
      backend's reason. An editable install is run from its source tree (copied, with a
      RECORD, into a private site directory first on the path; `PluginRun.source` names
      the tree); `from_source=False` refuses it as the backend does
      (`outside-distribution`).

    `name` is the plugin's entry-point name (the name in the report); found from the
    installed entry points when not given. `path` replaces `sys.path` for finding
    installed plugins (a private site directory). Invalid needs raise
    `dihya.needs.NeedsError`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    needs = sample_needs() if needs is None else needs
    if mode == "sandbox":
        return _run_sandboxed(plugin, needs, name, required, hook_timeout_s, role, group,
                              sandbox or SandboxSettings(), path, from_source)
    cls, found_name, distribution = _resolve_class(plugin, group)
    record = PluginRecord(
        name=name or found_name, distribution=distribution, version=cls.version,
        value=f"{cls.__module__}:{cls.__qualname__}", status=ACTIVE, reason=None,
        message="active", mode="in-process", fingerprint=None, approved_fingerprint=None,
        hooks=implemented_hooks(cls), hook_args=hook_arguments(cls), required=required,
        safe=cls.safe,
        priority=cls.priority, description=cls.description, author=cls.author,
        isolation=("none: runs in the test process",), actions=plugin_actions(cls),
        executor=InProcessExecutor(), instance=cls())
    config = Config(path=_CONFIG_PATH, exists=False, group=group,
                    hook_timeout_s=hook_timeout_s)
    return _generate(needs, RegistrySnapshot((record,), config, time.time(), 0.0), record,
                     role)


def _generate(needs: Any, snapshot: RegistrySnapshot, record: PluginRecord,
              role: str | None) -> PluginRun:
    seen: list[dict[str, Any]] = []

    def generate(final: dict[str, Any]) -> dict[str, str]:
        from dihya.generator import generate as core_generate

        seen.append(copy.deepcopy(final))
        return core_generate(final)

    try:
        result = run_generation(needs, snapshot, role=role, generate=generate)
    except GenerationFailed as exc:
        return PluginRun({}, exc.plugins, seen[-1] if seen else None, record, failure=exc)
    return PluginRun(result.files, result.plugins, seen[-1] if seen else None, record,
                     result=result)


def _slug(text: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", text.removesuffix("Plugin")).lower() or "plugin"


def _resolve_class(plugin: type[GenerationPluginBase] | str,
                   group: str) -> tuple[type[GenerationPluginBase], str, str]:
    """The checked class, its entry-point name and its distribution ("" if not installed)."""
    if isinstance(plugin, str):
        found = _installed(plugin, group)
        where = f"entry point {plugin!r} ({found.value})"
        try:
            obj = found.entry_point.load()
        except Exception as exc:
            raise PluginNotAdmitted(Reason.IMPORT_ERROR, f"importing the plugin raised "
                                    f"{type(exc).__name__}: {exc}") from exc
        return validate_plugin_class(obj, where), plugin, found.distribution
    cls = validate_plugin_class(plugin, f"class {getattr(plugin, '__qualname__', plugin)}")
    match = _entry_point_of(cls, group)
    if match is None:
        return cls, _slug(cls.__name__), ""
    return cls, match.name, match.distribution


def _entry_point_of(cls: type, group: str,
                    path: Sequence[str] | None = None) -> DiscoveredPlugin | None:
    """The installed entry point of `group` that names `cls`, without importing others."""
    top = cls.__module__.partition(".")[0]
    dists = set(md.packages_distributions().get(top, ()))
    for found in discover(group, path):
        if found.distribution not in dists and found.module.partition(".")[0] != top:
            continue
        try:
            if found.entry_point.load() is cls:
                return found
        except Exception:  # another entry point of the same package that does not load
            continue
    return None


def _installed(name: str, group: str, path: Sequence[str] | None = None) -> DiscoveredPlugin:
    try:
        return find_installed(name, group, path)
    except PluginNotFound as exc:
        if exc.reason == Reason.DUPLICATE_NAME:
            raise PluginNotAdmitted(exc.reason, exc.message) from exc
        raise PluginNotAdmitted("not-installed", f"no installed distribution declares the "
                                f"entry point {name!r} in {group}; install the plugin (tox "
                                "does) or pass the plugin class with mode='in-process'") from exc


def _run_sandboxed(plugin: type[GenerationPluginBase] | str, needs: Any, name: str | None,
                   required: bool, hook_timeout_s: float, role: str | None, group: str,
                   settings: SandboxSettings, path: Sequence[str] | None,
                   from_source: bool = True) -> PluginRun:
    if name is None:
        if isinstance(plugin, str):
            name = plugin
        else:
            match = _entry_point_of(plugin, group, path)
            if match is None:
                raise PluginNotAdmitted(
                    "not-installed", f"{plugin.__qualname__} is not the class of an installed "
                    f"entry point of {group}: mode='sandbox' needs the plugin installed from "
                    "a wheel (tox installs it so)")
            name = match.name
    found = _installed(name, group, path)
    if found.editable and from_source:
        site, source = _source_site(found)
        try:
            run = _run_sandboxed(name, needs, name, required, hook_timeout_s, role, group,
                                 settings, [str(site), *(sys.path if path is None else path)],
                                 from_source=False)
        finally:
            shutil.rmtree(site.parent, ignore_errors=True)
        return attrs.evolve(run, source=source)
    files, problem = verified_files(found, path)
    if problem is not None or files is None:
        raise PluginNotAdmitted(*(problem or (Reason.MISSING_FILE, "no files")))
    missing = dependency_problems(found, path)
    if missing:
        raise PluginNotAdmitted(Reason.MISSING_DEPENDENCY, "; ".join(missing))
    entry = AllowEntry(name=name, distribution=found.distribution, version=found.version,
                       fingerprint=files.fingerprint, mode="sandbox", required=required)
    config = Config(path=_CONFIG_PATH, exists=False, group=group,
                    hook_timeout_s=hook_timeout_s, allow=(entry,), sandbox=settings)
    snapshot = build_registry(config, environ={}, path=path)
    try:
        record = snapshot.get(name)
        if record is None or not record.active:
            reason = record.reason if record else "not-installed"
            message = record.message if record else "the registry did not find it"
            raise PluginNotAdmitted(reason or "refused", message)
        return _generate(needs, snapshot, record, role)
    finally:
        snapshot.close()


def _record_hash(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _source_site(found: DiscoveredPlugin) -> tuple[Path, Path]:
    """A private site directory with the editable plugin's packages copied from its source
    tree and its dist-info with a RECORD of every file, as pip installs a wheel; and the
    source tree's directory. Raises `PluginNotAdmitted` when a package cannot be found."""
    assert found.dist_info is not None
    dist = md.PathDistribution(found.dist_info)
    tops = sorted({ep.module.partition(".")[0] for ep in dist.entry_points})
    root = Path(tempfile.mkdtemp(prefix="dihya-testing-"))
    root.chmod(0o755)  # a sandbox user reads it too
    site = root / "site"
    site.mkdir(mode=0o755)
    source: Path | None = None
    try:
        for top in tops:
            spec = importlib.util.find_spec(top)
            locations = list(spec.submodule_search_locations or ()) if spec else []
            if spec is not None and locations:
                package = Path(locations[0])
                shutil.copytree(package, site / top,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                source = source or package.parent
            elif spec is not None and spec.origin and spec.origin.endswith(".py"):
                module = Path(spec.origin)
                shutil.copy2(module, site / module.name)
                source = source or module.parent
            else:
                raise PluginNotAdmitted(Reason.IMPORT_ERROR, f"the editable install of "
                                        f"{found.distribution} names {top!r}, which is not "
                                        "importable from its source tree")
        info = site / found.dist_info.name
        info.mkdir()
        for item in found.dist_info.iterdir():
            if item.is_file() and item.name not in ("RECORD", "direct_url.json",
                                                    "INSTALLER", "REQUESTED"):
                shutil.copy2(item, info / item.name)
        record = []
        for file in sorted(p for p in site.rglob("*") if p.is_file()):
            data = file.read_bytes()
            record.append(f"{file.relative_to(site).as_posix()},{_record_hash(data)},{len(data)}")
        record.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return site, source or site


def _lines(run: PluginRun) -> str:
    lines = [f"  {h.name} {h.hook}: {h.status}" + (f" ({h.detail})" if h.detail else "")
             for h in run.plugins] or ["  (no hook was called)"]
    if run.failure is not None:
        lines.append(f"  generation failed at stage {run.failure.stage}: {run.failure}")
    return "report:\n" + "\n".join(lines)


def assert_hook_status(run: PluginRun, name: str, hook: str, status: str) -> HookResult:
    """Assert that `hook` of plugin `name` was called and ended with `status`."""
    found = run.hook(name, hook)
    if found is None:
        raise AssertionError(f"{hook} of plugin {name!r} was not called\n{_lines(run)}")
    if found.status != status:
        raise AssertionError(f"{hook} of plugin {name!r} is {found.status}, expected "
                             f"{status}\n{_lines(run)}")
    return found


def assert_hook_ok(run: PluginRun, name: str, hook: str) -> HookResult:
    """Assert that `hook` of plugin `name` was called and its return was accepted."""
    return assert_hook_status(run, name, hook, OK)


def assert_generation_ok(run: PluginRun) -> None:
    """Assert that the generation succeeded and that every hook call was `ok`."""
    if not run.ok:
        raise AssertionError(f"the generation did not go cleanly\n{_lines(run)}")


def installed_plugins(group: str = DEFAULT_GROUP) -> Mapping[str, str]:
    """Entry-point names of the installed plugins of `group`, mapped to their distribution."""
    return {p.name: p.distribution for p in discover(group)}


def action_input_problems(plugin: type[GenerationPluginBase], action: str,
                          payload: Any) -> list[dict[str, str]]:
    """What the backend answers when `payload` is posted to `action` of `plugin`: the
    `errors` of its 422 (each a JSON `pointer` and a `detail`), or [] when the payload
    passes the action's `input_schema`. The same check as `POST
    /api/v1/plugins/<name>/actions/<action>`, without a server."""
    from dihya.web.api import validate_body
    from dihya.web.problems import ApiProblem

    spec = plugin_actions(plugin).get(action)
    if spec is None:
        raise KeyError(f"{plugin.__qualname__} declares no action {action!r}")
    try:
        validate_body(spec.input_schema, payload)
    except ApiProblem as problem:
        errors: list[dict[str, str]] = problem.extra["errors"]
        return errors
    return []
