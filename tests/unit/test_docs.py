"""The generated references in docs/ must match the code they are generated from."""

from __future__ import annotations

import re
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


def test_runnable_marks_sit_on_sh_blocks_and_sh_blocks_hold_no_usage_syntax() -> None:
    """See the note at the top of docs/operator-guide.md: a block marked runnable is a
    `sh` block (tests/integration/test_doc_blocks.py runs it); no `sh` block holds a usage
    line such as `[--mode sandbox|in-process]`, which a shell cannot run."""
    from support.docblocks import MARK, PAGES, blocks

    usage = re.compile(r"\[--?[A-Za-z][\w-]*[ =][^\]]*\|[^\]]*\]")
    marked = 0
    for page in PAGES:
        marks = [ln for ln in page.read_text("utf-8").splitlines() if ln.strip() == MARK]
        assert len(marks) == sum(1 for b in blocks(page) if b[3]), \
            f"{page.name}: a {MARK} line not right before a fence"
        for line, info, body, is_marked in blocks(page):
            if is_marked:
                marked += 1
                assert info == "sh", f"{page.name}:{line}: a runnable block must be `sh`"
            if info in ("sh", "bash", "shell"):
                bad = [ln for ln in body.splitlines() if usage.search(ln.split("#")[0])]
                assert not bad, f"{page.name}:{line}: usage syntax in a shell block: {bad}"
    assert marked >= 3
