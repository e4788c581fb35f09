"""Requests sent as changes (issue #16): a worker keeps the code it was last given, and
the next request sends only the files that differ. What a hook gets must be exactly what
a request in full would give it, whatever the hook (or a hostile plugin) did to its copy
or to what its worker keeps; what the backend accepts is still rebuilt from its own copy
and validated."""

from __future__ import annotations

import json
from typing import Any

from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.sandbox import pool as pool_module
from dihya.sandbox import protocol

#: writes, as `seen.json`, every (path, text) it was given, in order
SEEN = hook('import json\ncode["seen.json"] = json.dumps(list(code.items()))\nreturn code')


def _seen(result: Any) -> list[list[str]]:
    seen: list[list[str]] = json.loads(result.files["seen.json"])
    return seen


def _others(result: Any) -> list[list[str]]:
    return [[path, text] for path, text in result.files.items() if path != "seen.json"]


def _other_needs(needs: dict[str, Any]) -> dict[str, Any]:
    entities = [*needs["entities"], {"name": "Order",
                                     "fields": [{"name": "total", "type": "integer"}]}]
    return {**needs, "project": "shop2", "entities": entities}


def test_a_hook_gets_the_whole_code_each_time_and_repeats_cross_as_changes(
        plugin_site, needs, closing, monkeypatch) -> None:
    snap, names = sandboxed(plugin_site, {"seen": SEEN})
    closing(snap)
    sizes: list[int] = []
    write_frame = pool_module.write_frame

    def counting(fd: int, message: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if message.get("op") == "call":
            sizes.append(len(protocol.encode(message)))
        write_frame(fd, message, *args, **kwargs)

    monkeypatch.setattr(pool_module, "write_frame", counting)
    other = _other_needs(needs)
    # the same needs again, other needs (files added, changed, removed), the first again
    for each in (needs, needs, other, needs, other):
        result = run_generation(each, snap)
        assert statuses(result) == {names["seen"]: "ok"}
        assert _seen(result) == _others(result)
    first, again = sizes[0], sizes[1]
    assert again * 4 < first, f"a repeated request was sent in full: {sizes}"


def test_changing_its_input_in_place_does_not_change_what_it_gets_next(
        plugin_site, needs, closing) -> None:
    mutate = hook('import json\nseen = json.dumps(list(code.items()))\n'
                  'for path in list(code)[1:]:\n    del code[path]\n'
                  'code[next(iter(code))] = "changed in place"\n'
                  'code["seen.json"] = seen\nreturn code')
    snap, _ = sandboxed(plugin_site, {"mutate": mutate})
    closing(snap)
    runs = [run_generation(each, snap) for each in (needs, needs, _other_needs(needs), needs)]
    assert {h.status for r in runs for h in r.plugins} == {"ok"}
    assert _seen(runs[0]) == _seen(runs[1]) == _seen(runs[3])
    assert _seen(runs[2]) != _seen(runs[0])
    for result in runs:
        assert len(result.files) == 2 and "changed in place" in result.files.values()


def test_a_plugin_that_tampers_with_what_its_worker_keeps_changes_only_its_own_input(
        plugin_site, needs, closing) -> None:
    """The worker's copy is the plugin's to corrupt (it runs in that process): the next
    input it rebuilds is then wrong, for that plugin alone. The backend rebuilds the answer
    from its own copy and validates it: no file the backend did not make or accept
    appears, and the other plugin's worker gets the real code."""
    tamper = hook('import sys\nframe = sys._getframe()\n'
                  'while frame is not None and "held" not in frame.f_locals:\n'
                  '    frame = frame.f_back\n'
                  'if frame is not None:\n'
                  '    for kept in frame.f_locals["held"].values():\n'
                  '        kept["../escape.txt"] = "out"\n'
                  '        kept[next(iter(kept))] = "tampered"\n'
                  'return code')
    snap, names = sandboxed(plugin_site, {"tamper": tamper, "seen": SEEN})
    closing(snap)
    honest = None
    for _ in range(3):
        result = run_generation(needs, snap)
        assert statuses(result) == {names["tamper"]: "ok", names["seen"]: "ok"}
        assert "../escape.txt" not in result.files
        assert "tampered" not in result.files.values()
        assert _seen(result) == _others(result)
        honest = honest or result.files
        assert result.files == honest
    # it may also send what it kept back as its own change: validated, refused
    bold = hook('import sys\nframe = sys._getframe()\n'
                'while frame is not None and "held" not in frame.f_locals:\n'
                '    frame = frame.f_back\n'
                'if frame is not None:\n'
                '    for kept in frame.f_locals["held"].values():\n'
                '        kept["../escape.txt"] = "out"\n'
                'out = dict(code)\nout["../escape.txt"] = "out, sent"\nreturn out')
    snap, names = sandboxed(plugin_site, {"bold": bold})
    closing(snap)
    for _ in range(2):
        result = run_generation(needs, snap)
        assert statuses(result) == {names["bold"]: "invalid-output"}
        assert "../escape.txt" not in result.files
