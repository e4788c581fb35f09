"""`stamp` remembers stamped files (issue #16): a remembered text is exactly the text
stamped afresh, for that path, that text and that header only, and the memo is bounded."""

from __future__ import annotations

from dihya_plugin_example import plugin
from dihya_plugin_example.plugin import comment_syntax, stamp, stamp_text


def _fresh(code: dict[str, str], version: str) -> dict[str, str]:
    header = plugin.header_line(version)
    return {p: (t if (s := comment_syntax(p)) is None else stamp_text(p, t, s, header))
            for p, t in code.items()}


def test_remembered_stamps_are_the_fresh_ones() -> None:
    plugin._STAMPED.clear()
    code = {"a.py": "x = 1\n", "b.md": "---\ntitle: x\n---\n# B\n", "c.json": "{}\n",
            "d.sh": "#!/bin/sh\necho\n", "e.txt": "line one\r\nline two\r\n"}
    for version in ("9.9.9", "9.9.9", "1.2.3"):
        assert stamp(code, version) == _fresh(code, version)
    # the same text under another path (other syntax), another text under the same path
    moved = {"a.sql": "x = 1\n", "a.py": "x = 2\n"}
    assert stamp(moved, "9.9.9") == _fresh(moved, "9.9.9")
    assert stamp(stamp(code, "9.9.9"), "9.9.9") == stamp(code, "9.9.9")  # idempotent


def test_the_memo_is_bounded() -> None:
    plugin._STAMPED.clear()
    plugin._stamped_chars = 0
    big = "x" * (plugin.STAMPED_CACHE_CHARS // 8)
    for n in range(20):
        code = {f"f{n}.py": big + str(n)}
        assert stamp(code, "1.0") == _fresh(code, "1.0")
        assert plugin._stamped_chars <= plugin.STAMPED_CACHE_CHARS
    huge = {"h.py": "y" * (plugin.STAMPED_CACHE_CHARS // 2)}
    assert stamp(huge, "1.0") == _fresh(huge, "1.0")
    assert ("h.py", huge["h.py"], plugin.header_line("1.0")) not in plugin._STAMPED
