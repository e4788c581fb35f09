"""A private site directory that real plugin wheels are pip-installed into, for tests."""

from __future__ import annotations

import itertools
import shutil
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from dihya.config import AllowEntry, Config
from dihya.gate.decide import inspect_files
from dihya.gate.discovery import discover
from support.wheels import build_plugin_wheel, pip_install

_counter = itertools.count()


class PluginSite:
    """A directory that pip installs plugin wheels into (`--target`), put on sys.path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        self.site.mkdir()
        self.wheels = root / "wheels"

    @property
    def path(self) -> list[str]:
        return [str(self.site), *sys.path]

    def unique(self, stem: str = "p") -> str:
        return f"{stem}{next(_counter)}x{uuid.uuid4().hex[:6]}"

    def install(self, name: str, **kwargs: object) -> Path:
        """Install (or upgrade: the previous version's files go, as pip would do) a plugin."""
        wheel = build_plugin_wheel(self.wheels, name, **kwargs)  # type: ignore[arg-type]
        module = "dihya_plugin_" + name.replace("-", "_")
        for old in [*self.site.glob(f"{module}-*.dist-info"), self.site / module]:
            if old.is_dir():
                shutil.rmtree(old)
        pip_install(sys.executable, str(wheel), target=self.site)
        return wheel

    def discover(self) -> list:
        return discover(path=self.path)

    def entry(self, name: str, **overrides: object) -> AllowEntry:
        plugin = next(p for p in self.discover() if p.name == name)
        files, _problem = inspect_files(plugin)
        assert files is not None
        values = {"name": name, "distribution": plugin.distribution, "version": plugin.version,
                  "fingerprint": files.fingerprint, "mode": "in-process"}
        values.update(overrides)
        return AllowEntry(**values)  # type: ignore[arg-type]

    def config(self, *entries: AllowEntry, timeout: float = 2.0) -> Config:
        return Config(path=self.root / "dihya.toml", exists=False, hook_timeout_s=timeout,
                      allow=entries)


def forget_plugin_modules(names: Iterable[str]) -> None:
    """Drop the modules of the plugins `names` (`dihya_plugin_<name>...`) from `sys.modules`,
    so that a later import runs them again: a module-scoped fixture's teardown."""
    prefixes = tuple(f"dihya_plugin_{name}" for name in names)
    for module in [m for m in sys.modules if m.startswith(prefixes)]:
        del sys.modules[module]
