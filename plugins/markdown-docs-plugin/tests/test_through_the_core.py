"""The markdown-docs plugin through the real core, with `dihya.testing`: the contract
check, the pipeline (copies, validation of every return, the core generator) and a sandbox
worker."""

from __future__ import annotations

from typing import Any

from dihya.testing import assert_generation_ok, assert_hook_ok, check_plugin_class, run_plugin

from dihya_plugin_markdown_docs import MarkdownDocsPlugin
from dihya_plugin_markdown_docs.plugin import DOC_PATHS, document

NAME = "markdown-docs"


def test_contract() -> None:
    assert check_plugin_class(MarkdownDocsPlugin) == ("after_generation",)


def test_in_a_real_generation(sample_needs: dict[str, Any]) -> None:
    result = run_plugin(MarkdownDocsPlugin, sample_needs)
    assert_generation_ok(result)
    assert result.needs is not None
    for path in DOC_PATHS:
        assert result.files[path] == document({}, result.needs, check=True)[path]


def test_in_the_sandbox(minimal_needs: dict[str, Any]) -> None:
    """As the backend runs it: the installed wheel, in a sandbox worker."""
    result = run_plugin(NAME, minimal_needs, mode="sandbox")
    assert_hook_ok(result, NAME, "after_generation")
    assert set(DOC_PATHS) <= set(result.files)
