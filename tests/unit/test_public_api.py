"""The public API: what `dihya` exports is what plugin authors may use, and the bundled
plugins (code and tests) use nothing else, so the core's layout can change underneath."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dihya

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = {"dihya", "dihya.testing"}


def test_every_exported_name_resolves() -> None:
    for name in dihya.__all__:
        assert getattr(dihya, name) is not None, name


def test_bundled_plugins_import_only_public_names() -> None:
    offenders = []
    for path in sorted((ROOT / "plugins").glob("*/*/**/*.py")):
        if "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module == "dihya" or node.module.startswith("dihya.")):
                if node.module not in PUBLIC_MODULES:
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
                elif node.module == "dihya":
                    offenders += [f"{path.relative_to(ROOT)}: {a.name} is not in dihya.__all__"
                                  for a in node.names if a.name not in dihya.__all__]
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                              if a.name.startswith("dihya.") and a.name not in PUBLIC_MODULES]
    assert not offenders, offenders


def test_import_dihya_stays_light() -> None:
    """The needs and generator exports load on first use: every `dihya` command and
    every sandbox worker imports the package."""
    code = ("import sys, dihya; heavy = [m for m in ('dihya.needs', 'dihya.generator', "
            "'jinja2', 'jsonschema') if m in sys.modules]; print(heavy); "
            "dihya.check_needs; print('dihya.needs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"
