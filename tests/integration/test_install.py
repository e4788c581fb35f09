"""`dihya plugins keygen|sign|install|uninstall` through the real command in a real venv:
a signed plugin installed in one command, upgraded by the same key without editing the
config, rolled back to the kept version with its publisher named again (its signature
kept in the wheel cache), refusals that leave nothing installed and the config unchanged,
and uninstall."""

from __future__ import annotations

import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

from support import pipfork
from support.wheels import build_plugin_wheel, plugin_source

pytestmark = pytest.mark.slow

DIST = "dihya-plugin-acme-hello"
NAME = "acme-hello"


def pip_show(backend, dist: str = DIST) -> bool:
    return pipfork.run([str(backend.python), "-m", "pip", "show", "--quiet", dist],
                       capture_output=True).returncode == 0


def publisher_table(public: str, *dists: str) -> str:
    listing = ", ".join(f'"{d}"' for d in dists)
    return (f'\n# ACME signs its own plugins (ticket OPS-7)\n[[plugins.publishers]]\n'
            f'name = "acme"\npublic_key = "{public}"\ndistributions = [{listing}]\n')


def refused(backend, *args: str, reason: str) -> None:
    before = backend.config.read_text()
    result = backend.dihya("plugins", "install", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"refused ({reason})" in result.stderr, result.stderr
    assert "nothing was installed" in result.stderr
    assert not pip_show(backend), "a refused wheel was installed"
    assert backend.config.read_text() == before


def test_signed_install_upgrade_refusals_and_uninstall(backend, tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    key = tmp_path / "acme.key"
    made = backend.dihya("plugins", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip().splitlines()[-1]
    assert public.startswith("ed25519:") and oct(key.stat().st_mode & 0o777) == "0o600"

    v1 = build_plugin_wheel(tmp_path / "v1", NAME, version="1.0.0")
    signed = backend.dihya("plugins", "sign", str(v1), "--key", str(key))
    assert signed.returncode == 0, signed.stderr
    sig = Path(str(v1) + ".sig")
    assert sig.exists()

    try:
        # no publisher configured yet: unknown
        refused(backend, str(v1), reason="unknown-publisher")
        # a publisher that may sign other distributions only
        original = backend.config.read_text()
        backend.config.write_text(original + publisher_table(public, "dihya-plugin-acme-other"))
        refused(backend, str(v1), "--signature", str(sig), reason="publisher-not-allowed")
        backend.config.write_text(original + publisher_table(public, "dihya-plugin-acme-*"))
        # the wheel altered after signing (one more module), with the original signature
        altered = tmp_path / "altered" / v1.name
        altered.parent.mkdir()
        shutil.copyfile(v1, altered)
        with zipfile.ZipFile(altered, "a") as zf:
            zf.writestr("dihya_plugin_acme_hello/backdoor.py", "import os\n")
        refused(backend, str(altered), "--signature", str(sig), reason="wheel-altered")
        # a signature made with another key that claims to be acme's
        other = tmp_path / "mallory.key"
        assert backend.dihya("plugins", "keygen", "--out", str(other)).returncode == 0
        forged = tmp_path / "forged.sig"
        assert backend.dihya("plugins", "sign", str(v1), "--key", str(other), "--out",
                             str(forged)).returncode == 0
        forged.write_text(forged.read_text().replace(
            forged.read_text().split('"public_key": "')[1].split('"')[0], public))
        refused(backend, str(v1), "--signature", str(forged), reason="bad-signature")
        # unsigned without --approve
        unsigned = build_plugin_wheel(tmp_path / "unsigned", NAME, version="1.0.0")
        refused(backend, str(unsigned), reason="unsigned")
        # a signed wheel whose dependency is not installed
        needy = build_plugin_wheel(tmp_path / "needy", NAME, version="1.0.0",
                                   requires=["dihya-core", "no-such-dist-xyz>=1"])
        assert backend.dihya("plugins", "sign", str(needy), "--key", str(key)).returncode == 0
        refused(backend, str(needy), reason="missing-dependency")

        # install: one command, signature beside the wheel (kept in the wheel cache)
        installed = backend.dihya("plugins", "install", str(v1), env=env)
        assert installed.returncode == 0, installed.stderr
        assert "signature ok: publisher 'acme'" in installed.stdout
        assert "installed and approved acme-hello" in installed.stdout
        assert pip_show(backend)
        row = backend.rows()[NAME]
        assert (row["status"], row["version"]) == ("active", "1.0.0")
        text = backend.config.read_text()
        assert "# operator note: keep me" in text and "# ACME signs its own" in text
        assert 'publisher = "acme"' in text
        first_fp = row["fingerprint"]

        # upgrade signed by the same key: admitted without editing the config
        v2 = build_plugin_wheel(tmp_path / "v2", NAME, version="1.1.0",
                                source=plugin_source(NAME, "1.1.0") + "\n# 1.1.0\n")
        assert backend.dihya("plugins", "sign", str(v2), "--key", str(key)).returncode == 0
        upgraded = backend.dihya("plugins", "install", str(v2), "--signature", str(v2) + ".sig",
                                 env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "(dihya-plugin-acme-hello 1.1.0 (was 1.0.0)" in upgraded.stdout
        row = backend.rows()[NAME]
        assert (row["status"], row["version"]) == ("active", "1.1.0")
        assert row["fingerprint"] != first_fp
        assert row["fingerprint"] in backend.config.read_text()
        assert backend.config.read_text().count("[[plugins.allow]]") == 1

        # going back to the older signed release needs --approve
        before = backend.config.read_text()
        back = backend.dihya("plugins", "install", str(v1))
        assert back.returncode == 1 and "refused (downgrade)" in back.stderr
        assert backend.config.read_text() == before and backend.rows()[NAME]["version"] == "1.1.0"

        # rollback to the kept 1.0.0 (a repack): its kept signature names acme again
        rolled = backend.dihya("plugins", "rollback", NAME, env=env)
        assert rolled.returncode == 0, rolled.stderr
        assert "-> 1.0.0" in rolled.stdout and "signed by acme" in rolled.stdout, rolled.stdout
        row = backend.rows()[NAME]
        assert (row["status"], row["version"], row["fingerprint"]) == ("active", "1.0.0",
                                                                      first_fp)
        entries = {e["version"]: e for e in
                   tomllib.loads(backend.config.read_text())["plugins"]["allow"]}
        assert {v: e.get("publisher") for v, e in entries.items()} == {"1.0.0": "acme",
                                                                       "1.1.0": "acme"}
        assert entries["1.0.0"]["fingerprint"] == first_fp

        # uninstall: removed, revoked
        removed = backend.dihya("plugins", "uninstall", NAME)
        assert removed.returncode == 0, removed.stderr
        assert "revoked acme-hello" in removed.stdout
        assert not pip_show(backend)
        assert NAME not in backend.rows()
        assert "[[plugins.allow]]" not in backend.config.read_text()
        assert "# operator note: keep me" in backend.config.read_text()
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet", DIST],
                    capture_output=True)


def test_unsigned_install_with_approve(backend, tmp_path: Path) -> None:
    wheel = build_plugin_wheel(tmp_path, NAME, version="1.0.0")
    try:
        result = backend.dihya("plugins", "install", str(wheel), "--approve")
        assert result.returncode == 0, result.stderr
        assert "unsigned dihya-plugin-acme-hello 1.0.0, approved with --approve" in result.stdout
        assert backend.rows()[NAME]["status"] == "active"
        assert "publisher" not in backend.config.read_text()
        assert backend.dihya("plugins", "uninstall", NAME).returncode == 0
        assert not pip_show(backend)
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet", DIST],
                    capture_output=True)
