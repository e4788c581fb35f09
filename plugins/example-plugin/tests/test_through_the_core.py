"""The example plugin through the real core, with `dihya.testing`: the contract check, the
pipeline (copies, validation of every return, the core generator) and a sandbox worker."""

from __future__ import annotations

from typing import Any

from dihya.testing import assert_generation_ok, assert_hook_ok, check_plugin_class, run_plugin

from dihya_plugin_example import ExamplePlugin, header_line

NAME = "example"


def test_contract() -> None:
    assert check_plugin_class(ExamplePlugin) == ("before_generation", "after_generation")


def test_in_a_real_generation(sample_needs: dict[str, Any]) -> None:
    result = run_plugin(ExamplePlugin, sample_needs)
    assert_generation_ok(result)
    assert result.needs is not None
    assert result.needs["title"] == "Team todo list"  # trimmed before the generator ran
    assert result.needs["version"] == "0.1.0"
    for path, text in result.files.items():
        if path.endswith(".py"):
            assert header_line() in text, path
            compile(text, path, "exec")
    assert ExamplePlugin().after_generation(result.files, result.needs) == result.files


def test_in_the_sandbox(sample_needs: dict[str, Any]) -> None:
    """As the backend runs it: the installed wheel, in a sandbox worker."""
    result = run_plugin(NAME, sample_needs, mode="sandbox")
    assert_hook_ok(result, NAME, "before_generation")
    assert_hook_ok(result, NAME, "after_generation")
    assert result.files == run_plugin(ExamplePlugin, sample_needs).files
