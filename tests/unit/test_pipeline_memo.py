"""What the pipeline remembers per process for needs sent again: the verdict that they are
valid (`pipeline._checked_loaded_needs`) and the core generator's code as canonical JSON
(by identity: `pipeline.frozen_files_json`). Attacks: needs that a lossy key would confuse
with needs remembered as valid (`false` and `0`, `3` and `3.0` are equal in Python), a caller's
`needs_sha256` naming needs remembered as valid, and a plugin that changes the code
after the core's remembered output was made."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from dihya.canonical import canonical_bytes, canonical_sha256
from dihya.needs import NeedsError, load_json
from dihya.pipeline import frozen_files_json, run_generation
from dihya.registry import build_registry
from support.wheels import plugin_source


def _needs(done_default: object, priority_default: object) -> dict:
    return {"project": "memo", "stack": "flask-api", "entities": [{"name": "Task", "fields": [
        {"name": "done", "type": "boolean", "default": done_default},
        {"name": "priority", "type": "integer", "default": priority_default}]}]}


def _loaded(needs: dict) -> dict:
    """The needs as the HTTP view hands them over: parsed by `load_json`."""
    loaded: dict = load_json(json.dumps({"needs": needs}))["needs"]
    return loaded


@pytest.mark.parametrize("good, bad", [
    ((False, 3), (0, 3)), ((False, 3), (False, 3.0)), ((False, 1), (False, True)),
    ((False, 3), ("false", 3))])
def test_needs_a_lossy_key_would_confuse_are_still_refused(plugin_site, good, bad) -> None:
    snap = build_registry(plugin_site.config(), path=plugin_site.path)
    valid = _loaded(_needs(*good))
    for _ in range(2):  # remembered as valid after the first
        run_generation(valid, snap, loaded=True)
    refused = _loaded(_needs(*bad))
    # equal in Python (but the string): a memo keyed by the value would let them through
    assert (refused == valid) is (bad[0] != "false")
    for _ in range(2):  # and never remembered
        with pytest.raises(NeedsError) as caught:
            run_generation(refused, snap, loaded=True, needs_sha256=canonical_sha256(valid))
        assert "default is not a valid" in str(caught.value)


def test_a_remembered_verdict_ignores_what_the_caller_says_the_hash_is(plugin_site) -> None:
    snap = build_registry(plugin_site.config(), path=plugin_site.path)
    valid = _loaded(_needs(False, 3))
    run_generation(valid, snap, loaded=True)
    bad = copy.deepcopy(valid)
    bad["entities"][0]["fields"][0]["name"] = "id"  # reserved
    with pytest.raises(NeedsError):
        run_generation(_loaded(bad), snap, loaded=True, needs_sha256=canonical_sha256(valid))


def test_the_remembered_code_json_is_the_files_own(plugin_site, needs) -> None:
    snap = build_registry(plugin_site.config(), path=plugin_site.path)
    for round_ in range(2):
        result = run_generation(_loaded(needs), snap, loaded=True)
        hits = frozen_files_json.cache_info().hits
        text, digest = result.files_canonical()
        assert text == canonical_bytes(result.files)
        assert digest == hashlib.sha256(text).hexdigest()
        if round_:  # the core's remembered output, the same mapping: its JSON remembered too
            assert frozen_files_json.cache_info().hits == hits + 1


def test_code_a_plugin_changed_is_encoded_afresh(plugin_site, needs) -> None:
    name = plugin_site.unique("stamp")
    body = '\ndef after_generation(self, code, needs):\n    code["STAMP"] = "x"\n    return code\n'
    plugin_site.install(name, source=plugin_source(name, body=body))
    snap = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    plain = build_registry(plugin_site.config(), path=plugin_site.path)
    run_generation(_loaded(needs), plain, loaded=True)  # the core's output remembered
    result = run_generation(_loaded(needs), snap, loaded=True)
    text, digest = result.files_canonical()
    assert "STAMP" in result.files and b'"STAMP":"x"' in text
    assert text == canonical_bytes(result.files)
    assert digest == hashlib.sha256(text).hexdigest()


@pytest.mark.parametrize("value", [
    {"b": 1, "a": 1.0, "c": True, "d": False, "e": 0, "f": None},  # key order, 1/1.0/true
    {"x": [1e16, -0.0, 5e-324, 1.7976931348623157e308, 0.1]},  # floats msgspec writes short
    {"big": 2**70, "neg": -(2**64)},  # past 64 bits
    {"s": "é\u2028\x7f\x00\"\\/\U0001f600"}, {"lone": "\ud800"},  # a lone surrogate
])
def test_the_memo_key_of_loaded_needs_reads_back_as_exactly_them(value: dict) -> None:
    """`_loaded_json` (msgspec) is the key `core_code` and the verdict memo read the needs
    back from: it must parse to the very value, types included (`1`, `1.0`, `true` and
    `0`, `-0.0`, `false` apart), key order kept, or needs could share another's entry."""
    from dihya.pipeline import _exact_json, _loaded_json

    loaded = load_json(json.dumps(value, ensure_ascii=False))
    text = _loaded_json(loaded)
    back = json.loads(text)
    assert back == loaded and json.dumps(back) == json.dumps(loaded)  # types and order
    assert _exact_json(back) == _exact_json(loaded)
    assert list(back) == list(loaded)


def test_the_remembered_needs_digest_is_each_needs_own() -> None:
    """`needs_digest` (the audit event's `needs_bytes` and `needs_sha256`) remembered by
    the needs' text: needs equal in Python but not in JSON (`1`, `1.0`, `true`; key order)
    each get their own canonical hash, on the first call and when remembered."""
    from dihya.pipeline import needs_digest

    variants = [{"a": 1, "b": 2}, {"a": 1.0, "b": 2}, {"a": True, "b": 2}, {"b": 2, "a": 1}]
    for _ in range(2):  # computed, then remembered
        for needs in variants:
            loaded = _loaded(needs)
            data = canonical_bytes(loaded)
            assert needs_digest(loaded) == (len(data), hashlib.sha256(data).hexdigest())
    # key order is not part of the canonical JSON: the same hash for both orders
    assert needs_digest(_loaded(variants[0])) == needs_digest(_loaded(variants[3]))
    assert len({needs_digest(_loaded(n))[1] for n in variants[:3]}) == 3


def test_remembered_frozen_needs_are_these_needs_and_a_plugin_cannot_change_them(
        plugin_site) -> None:
    """The plugins' needs are frozen once per needs text (`pipeline.frozen_needs`) and
    shared by the generations of the same needs: a plugin that changes its view of them in
    place changes nothing the next generation sees; needs equal in Python but other JSON
    (the same keys in another order) get their own frozen copy."""
    name = plugin_site.unique("meddler")
    body = ('\ndef before_generation(self, needs):\n'
            '    assert needs["project"] == "memo", needs["project"]\n'
            '    assert needs["entities"][0]["fields"][1]["default"] == 3\n'
            '    needs["project"] = "changed"\n'
            '    needs["entities"][0]["fields"][1]["default"] = 99\n'
            '    return needs\n')
    plugin_site.install(name, source=plugin_source(name, body=body))
    snap = build_registry(plugin_site.config(plugin_site.entry(name)), path=plugin_site.path)
    from dihya.pipeline import frozen_needs

    plain = _needs(False, 3)
    reordered = dict(reversed(list(plain.items())))
    assert reordered == plain
    for needs in (_loaded(plain), _loaded(reordered)):
        before = copy.deepcopy(needs)
        for _ in range(3):
            result = run_generation(needs, snap, loaded=True)
            assert [h.status for h in result.plugins] == ["ok"], result.plugins
        assert needs == before
        text = json.dumps(before, separators=(",", ":"), ensure_ascii=False)
        frozen = frozen_needs(text)
        assert frozen is frozen_needs(text)
        assert frozen == before and list(frozen) == list(before)
        assert frozen["project"] == "memo"
        assert frozen["entities"][0]["fields"][1]["default"] == 3
