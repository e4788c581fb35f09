"""The way back of `dihya plugins install`, through the real command in a real venv with
real wheels of two versions: an upgrade whose post-install check fails puts the previous
version back (kept as a wheel in the user's cache) and it runs again; `plugins rollback`
goes back on purpose; both are audited (`plugin.rolled-back`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from support import pipfork
from support.wheels import build_plugin_wheel, plugin_source

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TODO = ROOT / "examples" / "needs" / "todo.json"
NAME = "wayback"
DIST = "dihya-plugin-wayback"
HOOK = '''
def after_generation(self, code, needs):
    code["wayback.txt"] = self.version
    return code
'''
BROKEN = 'raise RuntimeError("this release is broken at import")\n'


def ran(backend: Any, out: Path) -> str | None:
    """The version of the plugin that ran in one `dihya generate`."""
    report = backend.json("generate", str(TODO), "-o", str(out), "--json")
    statuses = {p["name"]: p["status"] for p in report["plugins"]}
    assert statuses.get(NAME) == "ok", report
    return (out / "wayback.txt").read_text()


def rolled_back(backend: Any) -> list[dict[str, Any]]:
    events = backend.json("audit", "export", "--format", "json")
    return [e for e in events if e["type"] == "plugin.rolled-back"]


def test_a_failed_upgrade_is_rolled_back_and_rollback_goes_back(backend,
                                                                  tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    wheels = {v: build_plugin_wheel(tmp_path / v, NAME, version=v,
                                    source=plugin_source(NAME, version=v, body=HOOK))
              for v in ("1.0.0", "2.1.0")}
    broken = build_plugin_wheel(tmp_path / "broken", NAME, version="2.0.0", source=BROKEN)

    def dihya(*args: str) -> subprocess.CompletedProcess[str]:
        return backend.dihya(*args, env=env)  # type: ignore[no-any-return]

    try:
        first = dihya("plugins", "install", str(wheels["1.0.0"]), "--approve")
        assert first.returncode == 0, first.stderr
        assert ran(backend, tmp_path / "o1") == "1.0.0"

        # a broken upgrade: its class cannot be loaded; 1.0.0 comes back and runs
        failed = dihya("plugins", "install", str(broken), "--approve")
        assert failed.returncode == 1, failed.stdout
        assert "refused (invalid-plugin)" in failed.stderr, failed.stderr
        assert f"the previously installed {DIST} 1.0.0 was installed again" in failed.stderr
        row = backend.rows()[NAME]
        assert (row["version"], row["status"]) == ("1.0.0", "active"), row
        assert ran(backend, tmp_path / "o2") == "1.0.0"
        events = rolled_back(backend)
        assert [(e["plugin_version"], e["reason"]) for e in events] == [
            ("1.0.0", "invalid-plugin")]
        kept = list((tmp_path / "cache" / "dihya" / "wheels" / DIST).glob("*.whl"))
        assert [k.name for k in kept] == ["dihya_plugin_wayback-1.0.0-py3-none-any.whl"]

        # a good upgrade, then a rollback on purpose
        upgraded = dihya("plugins", "install", str(wheels["2.1.0"]), "--approve")
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"kept {DIST} 1.0.0 as" in upgraded.stdout, upgraded.stdout
        assert ran(backend, tmp_path / "o3") == "2.1.0"
        back = dihya("plugins", "rollback", NAME)
        assert back.returncode == 0, back.stderr
        assert f"rolled back {NAME}: {DIST} 2.1.0 -> 1.0.0" in back.stdout, back.stdout
        row = backend.rows()[NAME]
        assert (row["version"], row["status"]) == ("1.0.0", "active"), row
        assert ran(backend, tmp_path / "o4") == "1.0.0"
        events = rolled_back(backend)
        assert [(e["plugin_version"], e["reason"]) for e in events][-1] == ("1.0.0",
                                                                            "on-purpose")
        assert {e["plugin_fingerprint"] for e in events} == {row["fingerprint"]}

        # nothing kept for a plugin never replaced: a clear refusal
        nothing = backend.dihya("plugins", "rollback", NAME,
                                env={"XDG_CACHE_HOME": str(tmp_path / "empty")})
        assert nothing.returncode == 1 and "no other version of" in nothing.stderr
    finally:
        pipfork.run([str(backend.python), "-m", "pip", "uninstall", "-y", "--quiet", DIST],
                    check=False)
