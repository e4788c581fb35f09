"""The operator's path through the real `dihya` command, on real installed wheels."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import pipfork
from support.wheels import build_plugin_wheel, build_wheel, plugin_source, tampered

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"
BUNDLED = ("example", "markdown-docs")
CONTRACT_FIELDS = {"name", "distribution", "version", "status", "reason", "mode", "fingerprint",
                   "hooks"}

pytestmark = pytest.mark.slow


@contextmanager
def extra_plugin(backend, tmp_path: Path, name: str, **kwargs) -> Iterator[None]:
    wheel = build_plugin_wheel(tmp_path / "extra", name, **kwargs)
    backend.pip("--no-deps", str(wheel))
    try:
        yield
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet",
                        f"dihya-plugin-{name}"], check=True)


def test_fresh_install_lists_bundled_plugins_refused(backend) -> None:
    rows = backend.rows()
    for name in BUNDLED:
        assert set(rows[name]) >= CONTRACT_FIELDS
        assert (rows[name]["status"], rows[name]["reason"]) == ("refused", "not-allowlisted")
        assert rows[name]["hooks"] == []
    table = backend.dihya("plugins", "list")
    assert table.returncode == 0 and "not-allowlisted" in table.stdout


@pytest.mark.parametrize("name", BUNDLED)
def test_wheel_and_installed_fingerprints_are_equal(backend, wheelhouse: Path, name: str) -> None:
    dist = f"dihya_plugin_{name.replace('-', '_')}"
    (wheel,) = wheelhouse.glob(f"{dist}-*.whl")
    from_wheel = backend.dihya("plugins", "fingerprint", str(wheel))
    installed = backend.dihya("plugins", "fingerprint", name)
    assert from_wheel.returncode == installed.returncode == 0, installed.stderr
    assert from_wheel.stdout.startswith("sha256:")
    assert from_wheel.stdout == installed.stdout


def test_approve_keeps_comments_and_activates(backend) -> None:
    result = backend.dihya("plugins", "approve", *BUNDLED)
    assert result.returncode == 0, result.stderr
    text = backend.config.read_text()
    assert text.startswith("# operator note: keep me\n")
    assert "hook_timeout_s = 5.0" in text
    rows = backend.rows()
    for name in BUNDLED:
        assert rows[name]["status"] == "active", rows[name]
        assert rows[name]["mode"] == "sandbox"
        assert rows[name]["fingerprint"] == rows[name]["approved_fingerprint"]
    assert rows["markdown-docs"]["hooks"] == ["after_generation"]
    assert set(rows["example"]["hooks"]) == {"before_generation", "after_generation"}
    shown = backend.json("plugins", "show", "example", "--json")
    assert shown["mode"] == "sandbox" and (shown["isolation"] or shown["warnings"])
    verify = backend.dihya("plugins", "verify", "--json")
    assert verify.returncode == 0
    assert all(row["ok"] for row in json.loads(verify.stdout))


def test_unknown_plugin_exits_1_naming_the_known_ones(backend) -> None:
    before = backend.config.read_text()
    result = backend.dihya("plugins", "approve", "example", "no-such-plugin")
    assert result.returncode == 1
    assert "no-such-plugin" in result.stderr and "example, markdown-docs" in result.stderr
    assert backend.config.read_text() == before, "a failed approval changed the config"
    assert backend.dihya("plugins", "show", "nope").returncode == 1
    assert backend.dihya("plugins", "revoke", "example").returncode == 1


def test_malformed_config_exits_2_with_file_and_line(backend) -> None:
    backend.config.write_text("[plugins]\nhook_timeout_s = 2\n[[plugins.allow]\n")
    result = backend.dihya("plugins", "list")
    assert result.returncode == 2
    assert f"{backend.config}:3:" in result.stderr
    backend.config.write_text('[plugins]\nhook_timeout_s = "soon"\n')
    result = backend.dihya("plugins", "list")
    assert result.returncode == 2 and "hook_timeout_s" in result.stderr


def test_tampered_plugin_is_refused_until_restored(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    module = backend.site_packages() / "dihya_plugin_markdown_docs" / "plugin.py"
    with tampered(module):
        rows = backend.rows()
        assert (rows["markdown-docs"]["status"], rows["markdown-docs"]["reason"]) == (
            "refused", "fingerprint-mismatch")
        assert rows["example"]["status"] == "active"
        verify = backend.dihya("plugins", "verify")
        assert verify.returncode == 1 and "fingerprint-mismatch" in verify.stdout
        report = backend.json("generate", str(TODO), "-o", str(backend.home / "out"), "--json")
        assert {p["name"] for p in report["plugins"] if p["status"] == "ok"} == {"example"}
        skipped = [p for p in report["plugins"] if p["status"] == "skipped"]
        assert skipped == [{"name": "markdown-docs", "hook": "*", "status": "skipped", "ms": 0.0,
                            "detail": "refused/fingerprint-mismatch"}]
    assert backend.rows()["markdown-docs"]["status"] == "active"


def test_generate_runs_both_plugins_and_writes_atomically(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    out = backend.home / "out"
    result = backend.dihya("generate", str(TODO), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    statuses = {(p["name"], p["hook"]): p["status"] for p in report["plugins"]}
    assert statuses == {("example", "before_generation"): "ok",
                        ("markdown-docs", "after_generation"): "ok",
                        ("example", "after_generation"): "ok"}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == {*report["files"], ".dihya-manifest.json"}
    assert "docs/API.md" in report["files"] and "README.md" in report["files"]
    assert "plugin example 1.0.1" in (out / "app" / "__init__.py").read_text()
    assert "/api/tasks" in (out / "docs" / "API.md").read_text()
    # the example plugin trimmed the title before the generator saw it
    assert "Team todo list" in (out / "README.md").read_text()

    again = backend.dihya("generate", str(TODO), "-o", str(out), "--json")
    assert again.returncode == 2 and "--force" in again.stderr
    forced = backend.dihya("generate", str(TODO), "-o", str(out), "--force")
    assert forced.returncode == 0 and "markdown-docs" in forced.stdout and "wrote" in forced.stdout
    (out / "notes.txt").write_text("mine")  # --force never deletes what it did not write
    refused = backend.dihya("generate", str(TODO), "-o", str(out), "--force")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr
    updated = backend.dihya("generate", str(TODO), "-o", str(out), "--update")
    assert updated.returncode == 0 and (out / "notes.txt").read_text() == "mine"


def test_env_var_and_disable_switch_plugins_off(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    env = {"DIHYA_PLUGINS_DISABLE": "example"}
    assert backend.rows(env=env)["example"]["reason"] == "disabled-by-env"
    report = backend.json("generate", str(TODO), "-o", str(backend.home / "a"), "--json", env=env)
    assert {p["name"] for p in report["plugins"] if p["status"] == "ok"} == {"markdown-docs"}

    disabled = backend.dihya("plugins", "disable", "markdown-docs", "--reason", "CVE-2026-1")
    assert disabled.returncode == 0
    row = backend.rows()["markdown-docs"]
    assert (row["status"], row["reason"]) == ("disabled", "disabled-by-config")
    assert "CVE-2026-1" in row["message"]
    assert backend.dihya("plugins", "verify").returncode == 0  # disabled is not a failure
    assert backend.dihya("plugins", "enable", "markdown-docs").returncode == 0
    assert backend.rows()["markdown-docs"]["status"] == "active"
    assert backend.dihya("plugins", "revoke", "markdown-docs").returncode == 0
    assert backend.rows()["markdown-docs"]["reason"] == "not-allowlisted"


def test_invalid_needs_exit_1_with_json_paths(backend, tmp_path: Path) -> None:
    needs = json.loads(TODO.read_text())
    needs["project"] = "Not a slug"
    needs["entities"][0]["fields"][0]["type"] = "blob"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(needs))
    result = backend.dihya("generate", str(bad), "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 1
    problems = {p["path"] for p in json.loads(result.stdout)["problems"]}
    assert problems == {"$.project", "$.entities[0].fields[0].type"}
    assert not (tmp_path / "out").exists()
    broken = tmp_path / "broken.json"
    broken.write_text('{"project": ')
    result = backend.dihya("generate", str(broken), "-o", str(tmp_path / "out"))
    assert result.returncode == 1 and "broken.json:1:" in result.stderr


def test_unsafe_plugin_cannot_run_in_process(backend, tmp_path: Path) -> None:
    with extra_plugin(backend, tmp_path, "risky", safe=False):
        refused = backend.dihya("plugins", "approve", "risky", "--mode", "in-process")
        assert refused.returncode == 1 and "safe = False" in refused.stderr
        assert "risky" not in backend.config.read_text()
        assert backend.dihya("plugins", "approve", "risky").returncode == 0
        assert backend.rows()["risky"]["status"] == "active"
        text = backend.config.read_text().replace('mode = "sandbox"', 'mode = "in-process"')
        backend.config.write_text(text)
        row = backend.rows()["risky"]
        assert (row["status"], row["reason"]) == ("refused", "unsafe-in-process")


def test_safe_plugin_approved_in_process(backend, tmp_path: Path) -> None:
    with extra_plugin(backend, tmp_path, "trusted", safe=True):
        result = backend.dihya("plugins", "approve", "trusted", "--mode", "in-process",
                               "--roles", "admin,developer")
        assert result.returncode == 0, result.stderr
        row = backend.rows()["trusted"]
        assert (row["status"], row["mode"], row["roles"]) == ("active", "in-process",
                                                              ["admin", "developer"])
        assert row["warnings"] == []


def test_missing_dependency_names_the_requirement(backend, tmp_path: Path) -> None:
    with extra_plugin(backend, tmp_path, "needy", requires=["dihya-core", "leftpad-xyz>=2"]):
        refused = backend.dihya("plugins", "approve", "needy")
        assert refused.returncode == 1
        assert "missing-dependency" in refused.stderr and "leftpad-xyz>=2" in refused.stderr
        dep = build_wheel(tmp_path / "dep", "leftpad-xyz", "2.0", {"leftpad_xyz.py": "X = 1\n"},
                          {}, requires=())
        backend.pip("--no-deps", str(dep))
        assert backend.dihya("plugins", "approve", "needy").returncode == 0
        assert backend.rows()["needy"]["status"] == "active"
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet",
                        "leftpad-xyz"], check=True)
        row = backend.rows()["needy"]
        assert (row["status"], row["reason"]) == ("failed", "missing-dependency")
        assert "leftpad-xyz>=2" in row["message"] and "not installed" in row["message"]
        assert backend.dihya("plugins", "verify").returncode == 1


def test_failing_import_code_is_contained(backend, tmp_path: Path) -> None:
    trigger = tmp_path / "break-now"
    source = (f"import os\nif os.path.exists({str(trigger)!r}):\n"
              "    raise RuntimeError('broken at import')\n" + plugin_source("boom"))
    with extra_plugin(backend, tmp_path, "boom", source=source):
        # in-process: a sandboxed worker could not even see the trigger file
        assert backend.dihya("plugins", "approve", "boom", "--mode", "in-process").returncode == 0
        assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
        trigger.touch()  # the plugin breaks after approval (an outage, a bad deploy...)
        rows = backend.rows()
        assert (rows["boom"]["status"], rows["boom"]["reason"]) == ("failed", "import-error")
        report = backend.json("generate", str(TODO), "-o", str(backend.home / "o"), "--json")
        assert {p["name"] for p in report["plugins"] if p["status"] == "ok"} == set(BUNDLED)


def test_editable_install_is_refused(backend, tmp_path: Path) -> None:
    project = tmp_path / "editable"
    package = project / "dihya_plugin_editme"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(plugin_source("editme"))
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dihya-plugin-editme"\nversion = "1.0.0"\n'
        '[project.entry-points."dihya.generation_plugins"]\neditme = "dihya_plugin_editme:Plugin"\n'
        '[tool.setuptools]\npackages = ["dihya_plugin_editme"]\n')
    backend.pip("-e", str(project))
    try:
        result = backend.dihya("plugins", "approve", "editme")
        assert result.returncode == 1 and "editable install" in result.stderr
        assert backend.rows()["editme"]["reason"] == "not-allowlisted"
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet",
                        "dihya-plugin-editme"], check=True)


def test_required_plugin_that_is_not_running_fails_the_generation(backend) -> None:
    assert backend.dihya("plugins", "approve", "markdown-docs", "--required").returncode == 0
    out = backend.home / "req"
    env = {"DIHYA_PLUGINS_DISABLE": "markdown-docs"}
    result = backend.dihya("generate", str(TODO), "-o", str(out), "--json", env=env)
    assert result.returncode == 1 and "required plugin 'markdown-docs'" in result.stderr
    assert not out.exists()


def test_approval_checks_the_class_in_a_sandbox_worker(backend, tmp_path: Path) -> None:
    body = "\ndef befor_generation(self, needs):\n    return needs\n"
    marker = tmp_path / "imported-in"
    # if the CLI imported the plugin itself, this write would succeed; in a worker it cannot
    source = (f"try:\n    open({str(marker)!r}, 'a').write('imported')\nexcept OSError:\n"
              "    pass\n" + plugin_source("typo", body=body))
    with extra_plugin(backend, tmp_path, "typo", source=source):
        result = backend.dihya("plugins", "approve", "typo")
        assert result.returncode == 1
        assert "befor_generation" in result.stderr and "before_generation" in result.stderr
        assert "typo" not in backend.config.read_text()
        assert not marker.exists(), "the plugin was imported outside the sandbox"


def test_reapproval_keeps_the_operators_choices(backend) -> None:
    assert backend.dihya("plugins", "approve", "example", "--roles", "admin",
                         "--required").returncode == 0
    assert backend.dihya("plugins", "disable", "example", "--reason", "audit").returncode == 0
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    row = backend.rows()["example"]
    assert (row["status"], row["roles"], row["required"]) == ("disabled", ["admin"], True)
    assert "audit" in row["message"]


def test_missing_config_is_reported(backend) -> None:
    missing = backend.home / "typo.toml"
    listed = backend.dihya("plugins", "list", "--json", config=missing)
    assert listed.returncode == 0 and "does not exist" in listed.stderr
    verify = backend.dihya("plugins", "verify", config=missing)
    assert verify.returncode == 1 and "nothing to verify" in verify.stderr


def test_help_and_version(backend) -> None:
    for args in (["--help"], ["plugins", "--help"], ["generate", "--help"], ["--version"]):
        assert backend.dihya(*args).returncode == 0
    assert backend.dihya("plugins", "approve", "x", "--mode", "nowhere").returncode == 2
    assert sys.version_info >= (3, 11)


def test_reload_goes_through_the_store(backend) -> None:
    first = backend.dihya("plugins", "reload")
    assert first.returncode == 0 and "state version 1" in first.stdout
    second = backend.dihya("plugins", "reload")
    assert "state version 2" in second.stdout
    backend.config.write_text("[plugins\n")
    assert backend.dihya("plugins", "reload").returncode == 2  # never reload a broken config
