"""For the browser tests (tests/console): the served backend they drive, and screenshots."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from support import pipfork
from support.serving import Server, clean_env

ROOT = Path(__file__).resolve().parents[2]


class Backend:
    """The venv, its config, tokens and the running server."""

    def __init__(self, venv: Path, home: Path, wheels: dict[str, Path]) -> None:
        self.venv = venv
        self.home = home
        self.config = home / "dihya.toml"
        self.wheels = wheels
        self.server: Server | None = None
        self.tokens: dict[str, str] = {}

    @property
    def base(self) -> str:
        assert self.server is not None
        return self.server.base

    def dihya(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "dihya"), "--config", str(self.config),
                               *args], capture_output=True, text=True, cwd=self.home,
                              env=clean_env(), timeout=300)

    def ok(self, *args: str) -> str:
        result = self.dihya(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def pip_install(self, wheel: Path) -> None:
        pipfork.run([str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", "--no-deps", str(wheel)], check=True)


def screenshot(page: Any, name: str) -> None:
    """Save the page as `<DIHYA_CONSOLE_SCREENSHOTS>/<name>.png` when asked."""
    folder = os.environ.get("DIHYA_CONSOLE_SCREENSHOTS")
    if folder:
        path = Path(folder)
        path = path if path.is_absolute() else ROOT / path
        path.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path / f"{name}.png"), full_page=True)
