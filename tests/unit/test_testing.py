"""`dihya.testing`: a plugin run through the real pipeline, validation and sandbox.

The pytest plugin is checked in a real `pytest` subprocess: its fixtures come from the
core's `pytest11` entry point, as in a plugin author's test environment.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dihya import GenerationPluginBase
from dihya.needs import NeedsError
from dihya.plugin import InvalidPluginError
from dihya.testing import (
    PluginNotAdmitted,
    assert_generation_ok,
    assert_hook_ok,
    assert_hook_status,
    check_plugin_class,
    minimal_needs,
    run_plugin,
    sample_needs,
)
from support.wheels import plugin_source


class Stamp(GenerationPluginBase):
    name = "Stamp"
    version = "1.0.0"

    def before_generation(self, needs: dict[str, Any]) -> dict[str, Any]:
        needs["title"] = "Stamped"
        return needs

    def after_generation(self, code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
        code["STAMP"] = needs["title"]
        return code


class Broken(GenerationPluginBase):
    def after_generation(self, code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
        raise ValueError("boom")


class Escapes(GenerationPluginBase):
    def after_generation(self, code: dict[str, str], needs: dict[str, Any]) -> dict[str, str]:
        return {"../outside.txt": "x"}


def test_in_process_runs_the_real_pipeline() -> None:
    run = run_plugin(Stamp, minimal_needs())
    assert_generation_ok(run)
    assert_hook_ok(run, "stamp", "before_generation")
    assert_hook_ok(run, "stamp", "after_generation")
    assert run.files["STAMP"] == "Stamped"
    assert run.needs is not None and run.needs["title"] == "Stamped"
    assert "app/__init__.py" in run.files  # the core generator ran
    assert run.report()["file_count"] == len(run.files)
    assert run.record.hooks == ("before_generation", "after_generation")


def test_default_needs_are_the_sample() -> None:
    run = run_plugin(Stamp, name="st")
    assert run.needs is not None and run.needs["project"] == sample_needs()["project"]
    assert_hook_ok(run, "st", "after_generation")


def test_a_raising_hook_is_reported_and_skipped() -> None:
    run = run_plugin(Broken, minimal_needs(), name="broken")
    hook = assert_hook_status(run, "broken", "after_generation", "failed")
    assert hook.detail == "ValueError: boom"
    assert "app/__init__.py" in run.files and not run.ok
    with pytest.raises(AssertionError, match=r"(?s)is failed, expected ok.*ValueError: boom"):
        assert_hook_ok(run, "broken", "after_generation")
    with pytest.raises(AssertionError, match="did not go cleanly"):
        assert_generation_ok(run)
    with pytest.raises(AssertionError, match="was not called"):
        assert_hook_ok(run, "broken", "before_generation")


def test_invalid_output_is_caught_by_the_real_validation() -> None:
    run = run_plugin(Escapes, minimal_needs(), name="escapes")
    hook = assert_hook_status(run, "escapes", "after_generation", "invalid-output")
    assert ".." in (hook.detail or "")
    assert "../outside.txt" not in run.files


def test_a_required_plugin_that_fails_fails_the_generation() -> None:
    run = run_plugin(Broken, minimal_needs(), name="broken", required=True)
    assert run.files == {} and run.failure is not None
    assert run.failure.stage == "plugin"
    assert run.report()["stage"] == "plugin"


def test_invalid_needs_and_classes_and_modes_are_errors() -> None:
    with pytest.raises(NeedsError):
        run_plugin(Stamp, {"project": "x"})

    class Typo(GenerationPluginBase):
        def after_generaton(self, code: dict[str, str], needs: dict[str, Any]) -> None: ...

    with pytest.raises(InvalidPluginError, match="did you mean `after_generation`"):
        run_plugin(Typo)
    with pytest.raises(InvalidPluginError):
        check_plugin_class(Typo)
    assert check_plugin_class(Stamp) == ("before_generation", "after_generation")
    with pytest.raises(ValueError, match="mode"):
        run_plugin(Stamp, mode="docker")  # type: ignore[arg-type]


def test_sandbox_needs_an_installed_plugin() -> None:
    with pytest.raises(PluginNotAdmitted, match="not-installed"):
        run_plugin(Stamp, mode="sandbox")
    with pytest.raises(PluginNotAdmitted, match="not-installed"):
        run_plugin("no-such-plugin", mode="sandbox")


def test_sandbox_runs_an_installed_plugin_in_a_worker(plugin_site: Any) -> None:
    name = plugin_site.unique("sbx")
    body = '''
def after_generation(self, code, needs):
    import os
    code["PID"] = str(os.getpid())
    return code
'''
    plugin_site.install(name, source=plugin_source(name, body=body, safe=False))
    run = run_plugin(name, minimal_needs(), mode="sandbox", path=plugin_site.path)
    assert_hook_ok(run, name, "after_generation")
    assert run.record.mode == "sandbox" and run.record.isolation
    import os

    assert run.files["PID"] != str(os.getpid()), "the hook ran in this process"
    # the in-process mode of the same installed plugin, by entry-point name
    here = run_plugin(name, minimal_needs(), path=plugin_site.path)
    assert here.files["PID"] == str(os.getpid())


def test_pytest_plugin_fixtures_in_a_real_pytest_run(tmp_path: Path) -> None:
    (tmp_path / "test_author.py").write_text(textwrap.dedent('''
        from dihya import GenerationPluginBase
        from dihya.testing import assert_hook_ok, run_plugin


        class Hello(GenerationPluginBase):
            def after_generation(self, code, needs):
                code["HELLO"] = needs["project"]
                return code


        def test_sample(sample_needs):
            assert sample_needs["project"] == "todo"
            sample_needs["project"] = "changed"


        def test_sample_is_fresh(sample_needs, minimal_needs):
            assert sample_needs["project"] == "todo"
            assert minimal_needs["project"] == "shop"


        def test_run(sample_needs):
            result = run_plugin(Hello, sample_needs, name="hello")
            assert_hook_ok(result, "hello", "after_generation")
            assert result.files["HELLO"] == "todo"
    '''))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    header = subprocess.run([sys.executable, "-m", "pytest", "--co", "-p", "no:cacheprovider",
                             str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert "hook API" in header.stdout


def _editable_install(root: Path, name: str) -> tuple[Path, Path]:
    """What `pip install -e` of a src-layout project leaves: a dist-info (RECORD listing only
    itself, direct_url.json saying editable) in a site directory, the code in the project's
    `src/`, put on the path as setuptools' `.pth` does. Returns (site, src)."""
    import json as _json

    module = "dihya_plugin_" + name
    src = root / "project" / "src"
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(plugin_source(name, body='''
    def after_generation(self, code, needs):
        code["FROM_SOURCE.txt"] = "edited in the tree\\n"
        return code
'''))
    site = root / "site"
    info = site / f"{module}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\n"
                                   "Version: 1.0.0\nRequires-Dist: dihya-core\n")
    (info / "entry_points.txt").write_text(
        f"[dihya.generation_plugins]\n{name} = {module}:Plugin\n")
    (info / "direct_url.json").write_text(_json.dumps(
        {"url": (root / "project").as_uri(), "dir_info": {"editable": True}}))
    (info / "RECORD").write_text("".join(f"{info.name}/{f},,\n" for f in (
        "METADATA", "entry_points.txt", "direct_url.json", "RECORD")))
    return site, src


def test_sandbox_mode_runs_an_editable_install_from_its_source_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from dihya.config import AllowEntry, Config
    from dihya.registry import build_registry

    name = f"edit{uuid.uuid4().hex[:8]}"
    site, src = _editable_install(tmp_path, name)
    monkeypatch.syspath_prepend(str(src))
    path = [str(site), str(src), *sys.path]
    run = run_plugin(name, mode="sandbox", path=path)
    assert_generation_ok(run)
    assert run.files["FROM_SOURCE.txt"] == "edited in the tree\n"
    assert run.source == src and run.record.mode == "sandbox"
    with pytest.raises(PluginNotAdmitted) as refused:
        run_plugin(name, mode="sandbox", path=path, from_source=False)
    assert refused.value.reason == "outside-distribution"
    assert "editable install" in refused.value.message
    # production: the backend's registry refuses it, whatever dihya.testing does
    entry = AllowEntry(name=name, distribution=f"dihya-plugin-{name}", version="1.0.0",
                       fingerprint=f"sha256:{'0' * 64}", mode="sandbox")
    snapshot = build_registry(Config(path=tmp_path / "d.toml", exists=False, allow=(entry,)),
                              environ={}, path=path)
    try:
        record = snapshot.get(name)
        assert record is not None and (record.status, record.reason) == (
            "refused", "outside-distribution")
    finally:
        snapshot.close()
