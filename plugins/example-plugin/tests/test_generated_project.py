"""The example plugin on a real project from the core generator: the project still works.

The last test runs the generated project's own test-suite, which needs Flask; it is
skipped when Flask is not installed (the plugin's test env needs only core and plugin).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dihya import validate_code

from dihya_plugin_example import ExamplePlugin, header_line


@pytest.fixture
def generated(needs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    generator = pytest.importorskip("dihya.generator")
    if not callable(getattr(generator, "generate", None)):
        pytest.skip("the core generator is not available")
    plugin = ExamplePlugin()
    prepared = plugin.before_generation(needs)
    code: dict[str, str] = generator.generate(prepared)
    return prepared, code


def test_every_commentable_file_is_stamped(
    generated: tuple[dict[str, Any], dict[str, str]]
) -> None:
    prepared, code = generated
    out = ExamplePlugin().after_generation(code, prepared)
    assert validate_code(out) == []
    assert set(out) == set(code)
    for path, text in out.items():
        stamped = header_line() in text
        assert stamped == (path.rsplit(".", 1)[-1] in ("py", "txt", "ini", "sql", "md")
                           or path == ".gitignore"), path
        if path.endswith(".py"):
            compile(text, path, "exec")


def test_generated_project_tests_still_pass(
    generated: tuple[dict[str, Any], dict[str, str]], tmp_path: Path
) -> None:
    pytest.importorskip("flask")
    prepared, code = generated
    out = ExamplePlugin().after_generation(code, prepared)
    for path, text in out.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
