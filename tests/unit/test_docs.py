"""The generated references in docs/ must match the code they are generated from."""

from __future__ import annotations

from pathlib import Path

from dihya.authoring.docgen import RENDERERS
from dihya.plugin import HOOK_SPECS

DOCS = Path(__file__).parents[2] / "docs"


def test_generated_docs_are_up_to_date() -> None:
    for filename, render in RENDERERS.items():
        current = (DOCS / filename).read_text("utf-8")
        assert current == render(), (f"docs/{filename} is stale: run "
                                     "`python -m dihya.authoring.docgen docs`")


def test_every_hook_is_documented() -> None:
    text = (DOCS / "hooks.md").read_text("utf-8")
    for spec in HOOK_SPECS:
        assert f"## `{spec.signature}`" in text
