"""Answers as "same" (issue #16): when a worker's previous call of a hook had exactly the
same input and the pipeline validated its answer, the request says `"memo"` and the worker
may answer `"same"` instead of sending that answer again; the backend then gives back the
answer it validated. The backend decides it from what it holds: a worker that answers
"same" to any other request (never asked, other input, an answer that was refused, another
plugin's answer) is killed, and gets nothing accepted. An honest plugin's result is always
its own latest answer."""

from __future__ import annotations

import json
from typing import Any

from sandbox_support import hook, sandboxed, statuses

from dihya.canonical import canonical_bytes
from dihya.pipeline import run_generation
from dihya.sandbox import pool as pool_module

#: replaces the worker's answers with a forged "same" from now on (the plugin runs in
#: the worker's process: it can send what it likes)
FORGE = ('import dihya.sandbox.worker as w\n'
         'if not getattr(w, "forging", False):\n'
         '    real = w._answer\n'
         '    def forged(fd, response, max_bytes):\n'
         '        real(fd, {"id": response["id"], "ok": True, "same": True}, max_bytes)\n'
         '    w._answer = forged\n'
         '    w.forging = True\n')


def _other_needs(needs: dict[str, Any]) -> dict[str, Any]:
    return {**needs, "project": "shop2"}


def _answers(monkeypatch: Any) -> list[dict[str, Any]]:
    """Every call's answer, as the backend reads it."""
    seen: list[dict[str, Any]] = []
    read_frame = pool_module.read_frame

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = read_frame(*args, **kwargs)
        seen.append(answer)
        return answer

    monkeypatch.setattr(pool_module, "read_frame", recording)
    return seen


def _violation(result: Any, name: str) -> bool:
    return any(h.name == name and h.violation and h.status == "failed"
               for h in result.plugins)


def test_a_repeated_answer_crosses_as_same_and_gives_the_validated_answer(
        plugin_site, needs, closing, monkeypatch) -> None:
    stamp = hook('return {path: "# stamped\\n" + text for path, text in code.items()}')
    normalise = hook('return {**needs, "version": "1.0.0"}', "before_generation")
    snap, names = sandboxed(plugin_site, {"stamp": stamp + normalise})
    closing(snap)
    answers = _answers(monkeypatch)
    runs = [run_generation(each, snap) for each in
            (needs, needs, needs, _other_needs(needs), needs, needs)]
    for result in runs:
        assert statuses(result) == {names["stamp"]: "ok"}
        assert all(text.startswith("# stamped\n") for text in result.files.values())
        # what the HTTP answer sends and the audit records (remembered for the very
        # mapping taken again: `pipeline.frozen_files_json`)
        assert result.files_canonical()[0] == canonical_bytes(result.files)
    assert runs[0].files == runs[1].files == runs[2].files == runs[4].files == runs[5].files
    assert runs[3].files != runs[0].files
    answers = [a for a in answers if a.get("op") != "hello"]
    same = [a for a in answers if a.get("same")]
    # both hooks: from the third run (the first sends the code in full), and again after
    # the other needs once each hook's input was seen twice
    assert len(same) >= 4, answers
    assert not any("changes" in a for a in answers[4:6]), answers[4:6]


def test_a_plugin_whose_answer_changes_always_gets_its_latest_answer(
        plugin_site, needs, closing) -> None:
    count = hook('import builtins\n'
                 'builtins.calls = getattr(builtins, "calls", 0) + 1\n'
                 'out = dict(code)\n'
                 'out["count.txt"] = "1" if builtins.calls < 3 else str(builtins.calls)\n'
                 'return out')
    snap, names = sandboxed(plugin_site, {"count": count})
    closing(snap)
    runs = [run_generation(needs, snap) for _ in range(6)]
    assert {h.name: h.status for r in runs for h in r.plugins} == {names["count"]: "ok"}
    assert [r.files["count.txt"] for r in runs] == ["1", "1", "3", "4", "5", "6"]
    for result in runs:
        assert result.files_canonical()[0] == canonical_bytes(result.files)


def test_a_worker_answering_same_unasked_is_killed(plugin_site, needs, closing) -> None:
    forge = hook(FORGE + 'out = dict(code)\nout["forged.txt"] = "x"\nreturn out')
    snap, names = sandboxed(plugin_site, {"forge": forge})
    closing(snap)
    for _ in range(2):  # a new worker each time: it forges from its first answer
        result = run_generation(needs, snap)
        assert _violation(result, names["forge"])
        assert "forged.txt" not in result.files


def test_same_for_other_input_gets_nothing_of_the_earlier_answer(
        plugin_site, needs, closing) -> None:
    """Honest for the needs `shop` (its answer validated and remembered), then "same" for
    other needs: the backend holds no answer to those, so the worker is killed and the
    answer to `shop` is not given for them."""
    sly = hook('if needs["project"] != "shop":\n' + "".join(
        f"    {line}\n" for line in FORGE.splitlines())
        + 'out = dict(code)\nout["for-shop.txt"] = "only for shop"\nreturn out')
    snap, names = sandboxed(plugin_site, {"sly": sly})
    closing(snap)
    for _ in range(3):  # remembered, then offered "same" for `shop`: honest, accepted
        result = run_generation(needs, snap)
        assert statuses(result) == {names["sly"]: "ok"}
        assert result.files["for-shop.txt"] == "only for shop"
    result = run_generation(_other_needs(needs), snap)
    assert _violation(result, names["sly"])
    assert "for-shop.txt" not in result.files


def test_same_after_a_refused_answer_is_refused(plugin_site, needs, closing) -> None:
    """Its answer was invalid (refused, never remembered); "same" to the very same input
    then is a violation, and the invalid answer never gets in."""
    refused = hook('import builtins\n'
                   'if getattr(builtins, "answered", False):\n' + "".join(
                       f"    {line}\n" for line in FORGE.splitlines())
                   + 'builtins.answered = True\n'
                   'out = dict(code)\nout["../escape.txt"] = "out"\nreturn out')
    snap, names = sandboxed(plugin_site, {"refused": refused})
    closing(snap)
    first = run_generation(needs, snap)
    assert statuses(first) == {names["refused"]: "invalid-output"}
    second = run_generation(needs, snap)
    assert _violation(second, names["refused"])
    assert "../escape.txt" not in second.files
    assert second.files == first.files


def test_one_plugins_validated_answer_is_not_another_plugins(
        plugin_site, needs, closing) -> None:
    """Two plugins given the same input: one answers honestly (remembered), the other
    answers "same" from its first call on. Memos are per worker: it gets nothing."""
    honest = hook('out = dict(code)\nout["honest.txt"] = "h"\nreturn out')
    forge = hook(FORGE + 'return code')
    snap, names = sandboxed(plugin_site, {"honest": honest, "forge": forge})
    closing(snap)
    for _ in range(3):
        result = run_generation(needs, snap)
        assert statuses(result)[names["honest"]] == "ok"
        assert _violation(result, names["forge"])
        assert json.loads(json.dumps(result.files))["honest.txt"] == "h"


def test_a_malformed_same_is_refused_even_when_offered(plugin_site, needs, closing) -> None:
    """Offered "same" (the third identical generation), a worker answering "same" with
    changes of its own, or with `"same": 1`, is killed and nothing of it is taken."""
    for forged in ('{"id": response["id"], "ok": True, "same": True, '
                   '"changes": {"set": {"evil.txt": "x"}, "removed": []}}',
                   '{"id": response["id"], "ok": True, "same": 1}',
                   '{"id": response["id"], "ok": False, "same": True}'):
        body = ('import builtins, dihya.sandbox.worker as w\n'
                'builtins.calls = getattr(builtins, "calls", 0) + 1\n'
                'if builtins.calls == 3:\n'
                '    real = w._answer\n'
                '    def forged(fd, response, max_bytes):\n'
                f'        real(fd, {forged}, max_bytes)\n'
                '    w._answer = forged\n'
                'out = dict(code)\nout["mine.txt"] = "m"\nreturn out')
        snap, names = sandboxed(plugin_site, {"malformed": hook(body)})
        closing(snap)
        for _ in range(2):
            result = run_generation(needs, snap)
            assert statuses(result) == {names["malformed"]: "ok"}
        result = run_generation(needs, snap)
        assert _violation(result, names["malformed"]), forged
        assert "evil.txt" not in result.files and "mine.txt" not in result.files
