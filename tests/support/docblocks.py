"""The fenced blocks of README.md and the guides, and which of them are marked runnable."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The line before a runnable block's opening fence.
MARK = "<!-- runnable -->"
_FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(page: Path) -> list[tuple[int, str, str, bool]]:
    """Every fenced block: (line of its opening fence, info string, text, marked)."""
    lines = page.read_text("utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        marked = start > 0 and lines[start - 1].strip() == MARK
        found.append((start + 1, match.group(1), "\n".join(lines[start + 1:end]), marked))
        i = end + 1
    return found


def runnable_blocks(page: Path) -> list[tuple[int, str]]:
    """The marked blocks of `page`, in order: (line, text)."""
    return [(line, text) for line, _info, text, marked in blocks(page) if marked]
