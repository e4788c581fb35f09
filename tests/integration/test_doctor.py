"""`dihya doctor`, and the operator-facing output of `plugins verify|list|approve`, on real
installed wheels, a real config file and a real state store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from support import pipfork
from support.wheels import tampered

pytestmark = pytest.mark.slow

BUNDLED = ("example", "markdown-docs")


def checks(backend, **kw) -> tuple[int, dict[str, dict[str, object]]]:
    result = backend.dihya("doctor", "--json", **kw)
    rows = json.loads(result.stdout)
    for row in rows:
        assert set(row) >= {"name", "ok", "detail", "fix"}, row
        assert row["ok"] == (row["level"] != "problem")
        if row["level"] != "ok":
            assert row["fix"], row  # every problem and warning says what to do
    return result.returncode, {r["name"]: r for r in rows}


def test_doctor_passes_on_a_good_setup_and_says_what_it_checked(backend) -> None:
    approve = backend.dihya("plugins", "approve", *BUNDLED)
    assert approve.returncode == 0, approve.stderr
    # approve says what it does before the seconds-long check, on stderr
    assert "checking example (dihya-plugin-example" in approve.stderr
    code, rows = checks(backend)
    assert code == 0, rows
    for name in ("sandbox-user", "bubblewrap", "landlock", "seccomp", "config",
                 "config-permissions", "store", "pth", "plugin:example",
                 "plugin:markdown-docs", "rate-limits", "audit-purge-floor"):
        assert name in rows, sorted(rows)
    assert rows["plugin:example"]["level"] == "ok"
    assert "verified" in str(rows["plugin:example"]["detail"])
    assert rows["store"]["level"] == "ok" and "takes a write" in str(rows["store"]["detail"])
    # no shared storage: said plainly, as a warning that does not fail
    limits = rows["rate-limits"]
    assert limits["level"] == "warning" and limits["ok"] is True
    assert "rate limits are per worker" in str(limits["detail"])
    # each layer is either in force or says why not
    for layer in ("bubblewrap", "landlock", "seccomp", "sandbox-user"):
        assert rows[layer]["detail"]
    text = backend.dihya("doctor")
    assert text.returncode == 0
    assert "ok   plugin:markdown-docs: active, verified" in text.stdout
    assert "0 problems" in text.stdout


def test_doctor_warns_when_http_purges_have_no_floor(backend) -> None:
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    code, rows = checks(backend)
    assert rows["audit-purge-floor"]["level"] == "ok", rows["audit-purge-floor"]
    assert "last 1 day" in str(rows["audit-purge-floor"]["detail"])
    with backend.config.open("a") as fh:
        fh.write("\n[audit]\nhttp_purge_min_age_days = 0\n")
    code, rows = checks(backend)
    row = rows["audit-purge-floor"]
    assert code == 0 and row["level"] == "warning", row  # warned, not failed
    assert "erase every audit event over HTTP" in str(row["detail"])
    assert "http_purge_min_age_days = 1" in str(row["fix"])


def test_doctor_fails_on_a_config_others_may_write_and_passes_once_fixed(backend) -> None:
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    os.chmod(backend.config, 0o666)
    code, rows = checks(backend)
    assert code == 1
    row = rows["config-permissions"]
    assert row["level"] == "problem" and "writable by every user" in str(row["detail"])
    text = backend.dihya("doctor")
    assert text.returncode == 1
    assert f"FAIL config-permissions: the config file {backend.config}" in text.stdout
    assert f"     fix: chmod o-rwx,g-w {backend.config}" in text.stdout
    # the printed fix is the fix
    subprocess.run(["chmod", "o-rwx,g-w", str(backend.config)], check=True)
    assert stat.S_IMODE(backend.config.stat().st_mode) == 0o640
    code, rows = checks(backend)
    assert code == 0 and rows["config-permissions"]["level"] == "ok"


def test_doctor_fails_on_a_tampered_plugin_with_the_reinstall_command(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    module = backend.site_packages() / "dihya_plugin_markdown_docs" / "plugin.py"
    with tampered(module):
        code, rows = checks(backend)
        assert code == 1
        row = rows["plugin:markdown-docs"]
        assert row["level"] == "problem"
        assert str(row["detail"]).startswith("refused/fingerprint-mismatch")
        assert "pip install --force-reinstall --no-deps 'dihya-plugin-markdown-docs==" \
            in str(row["fix"])
        assert rows["plugin:example"]["level"] == "ok"
    assert checks(backend)[0] == 0


def test_doctor_flags_an_approved_plugin_that_is_not_installed(backend) -> None:
    text = backend.config.read_text() + (
        '\n[[plugins.allow]]\nname = "gone"\ndistribution = "dihya-plugin-gone"\n'
        f'version = "2.0.0"\nfingerprint = "sha256:{"0" * 64}"\n')
    backend.config.write_text(text)
    code, rows = checks(backend)
    assert code == 1
    assert rows["plugin:gone"]["detail"] == "approved (dihya-plugin-gone 2.0.0) but not installed"
    assert "plugins revoke gone" in str(rows["plugin:gone"]["fix"])
    # installed plugins nobody approved are named, as a warning
    assert rows["plugins-unapproved"]["level"] == "warning"
    assert "example, markdown-docs" in str(rows["plugins-unapproved"]["detail"])


def test_doctor_flags_an_unacknowledged_pth_file_until_acknowledged(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    pth = backend.site_packages() / "zz_doctor_test.pth"
    pth.write_text("import os\n")
    try:
        code, rows = checks(backend)
        assert code == 1
        row = rows["pth:zz_doctor_test.pth"]
        assert row["level"] == "problem"
        assert "plugins acknowledge-pth zz_doctor_test.pth" in str(row["fix"])
        assert backend.dihya("plugins", "acknowledge-pth", "zz_doctor_test.pth").returncode == 0
        code, rows = checks(backend)
        assert code == 0 and rows["pth"]["level"] == "ok"
    finally:
        pth.unlink()


def test_doctor_on_a_missing_or_invalid_config(backend) -> None:
    missing = backend.home / "nowhere.toml"
    code, rows = checks(backend, config=missing)
    assert code == 1
    assert rows["config"]["fix"] == f"dihya config init {missing}"
    # the layers are checked whatever the config
    assert "bubblewrap" in rows
    bad = backend.home / "bad.toml"
    bad.write_text("[plugins]\nhook_timeout = 1\n")
    code, rows = checks(backend, config=bad)
    assert code == 1
    assert "did you mean 'hook_timeout_s'?" in str(rows["config"]["detail"])
    assert rows["config"]["fix"].startswith(f"dihya config check {bad}")  # type: ignore[union-attr]
    # the fix is a command that names the line
    check = backend.dihya("config", "check", str(bad))
    assert check.returncode == 1 and f"{bad}:2:1:" in check.stdout


def test_doctor_follows_the_config_given_after_it(backend) -> None:
    assert backend.dihya("plugins", "approve", "example").returncode == 0
    result = subprocess.run([str(backend.venv / "bin" / "dihya"), "doctor", "--json",
                             "--config", str(backend.config)], capture_output=True,
                            text=True, cwd=backend.home, timeout=300,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("DIHYA_")})
    assert result.returncode == 0, result.stdout
    names = {r["name"] for r in json.loads(result.stdout)}
    assert "plugin:example" in names


def test_verify_says_active_once(backend) -> None:
    assert backend.dihya("plugins", "approve", *BUNDLED).returncode == 0
    verify = backend.dihya("plugins", "verify")
    assert verify.returncode == 0
    assert "active active" not in verify.stdout
    assert "ok   example: active, verified" in verify.stdout
    assert backend.dihya("plugins", "disable", "example", "--reason", "CVE-1").returncode == 0
    verify = backend.dihya("plugins", "verify")
    assert "ok   example: disabled/disabled-by-config: " in verify.stdout


def test_list_on_80_columns_keeps_names_whole(backend, tmp_path: Path) -> None:
    from support.wheels import build_plugin_wheel

    long = "a-rather-long-plugin-name-for-narrow-terminals"
    wheel = build_plugin_wheel(tmp_path / "extra", long)
    backend.pip("--no-deps", str(wheel))
    try:
        result = backend.dihya("plugins", "list", env={"COLUMNS": "80"})
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), result.stdout
        for name in (*BUNDLED, long):
            assert any(name in line for line in lines), (name, result.stdout)
        assert "more: `plugins show NAME`, --json" in result.stdout
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet",
                        f"dihya-plugin-{long}"], check=True)
