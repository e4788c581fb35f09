"""Integration fixtures: real wheels of the core and both plugins, installed into real venvs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import pipfork
from support.checkout import checkout_wheels

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of dihya-core and every bundled plugin, built from this checkout (once per
    source state in a tox run: `support.checkout`)."""
    out = tmp_path_factory.mktemp("wheels")
    checkout_wheels(out)
    return out


def make_venv(where: Path, wheels: list[Path]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    pipfork.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 *map(str, wheels)], check=True)
    return where


class Backend:
    """A venv with the core and the bundled plugins, and a config file of its own."""

    def __init__(self, venv: Path, home: Path) -> None:
        self.venv = venv
        self.home = home
        self.config = home / "dihya.toml"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def site_packages(self) -> Path:
        out = subprocess.run([str(self.python), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True)
        return Path(out.stdout.strip())

    def dihya(self, *args: str, env: dict[str, str] | None = None,
              config: Path | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DIHYA_")}
        full_env.update(env or {})
        cmd = [str(self.venv / "bin" / "dihya"), "--config", str(config or self.config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=self.home, env=full_env,
                              timeout=300)

    def json(self, *args: str, **kw: object) -> object:
        result = self.dihya(*args, **kw)  # type: ignore[arg-type]
        assert result.stdout, result.stderr
        return json.loads(result.stdout)

    def rows(self, **kw: object) -> dict[str, dict[str, object]]:
        return {r["name"]: r for r in self.json("plugins", "list", "--json", **kw)}  # type: ignore[union-attr,index]

    def pip(self, *args: str) -> None:
        pipfork.run([str(self.python), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", *args], check=True)


@pytest.fixture(scope="session")
def installed_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv") / "venv", sorted(wheelhouse.glob("*.whl")))


@pytest.fixture
def backend(installed_venv: Path, tmp_path: Path) -> Iterator[Backend]:
    home = tmp_path / "home"
    home.mkdir()
    b = Backend(installed_venv, home)
    b.config.write_text("# operator note: keep me\n[plugins]\nhook_timeout_s = 5.0\n")
    yield b
