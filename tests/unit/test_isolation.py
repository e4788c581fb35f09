"""In-process hooks share no writable data: whatever a plugin does to what it was given, or
to what it returned, the next plugin and the core see what they would have seen anyway.

Real plugins, installed from wheels and called by the real pipeline; each attack is
followed by a witness plugin that reports what it sees, compared with a run without it.
"""

from __future__ import annotations

import copy
import json

import pytest

from dihya.pipeline import run_generation
from dihya.registry import build_registry
from support.wheels import plugin_source

WITNESS = '''
def before_generation(self, needs):
    import json
    global SEEN_BEFORE
    SEEN_BEFORE = json.dumps(needs)
    return needs

def after_generation(self, code, needs):
    import json
    out = dict(code)
    out["seen/needs.json"] = json.dumps(needs)
    out["seen/code.json"] = json.dumps(sorted(code.items()))
    return out
'''


def install(plugin_site, bodies: dict[str, str]) -> tuple[object, dict[str, str]]:
    """Install one plugin per body, prioritised in the order given; return the snapshot."""
    names = {}
    for priority, (key, body) in enumerate(bodies.items(), start=1):
        name = plugin_site.unique(key)
        names[key] = name
        plugin_site.install(name, source=plugin_source(name, body=body, priority=priority))
    snap = build_registry(plugin_site.config(*(plugin_site.entry(n) for n in names.values())),
                          path=plugin_site.path)
    mine = [snap.get(n) for n in names.values()]
    assert all(r.status == "active" for r in mine), [r.message for r in mine]
    return snap, names


def hooks(before: str = "return needs", after: str = "return code") -> str:
    def method(signature: str, body: str) -> str:
        return f"\ndef {signature}:\n" + "".join(f"    {line}\n" for line in body.splitlines())

    return (method("before_generation(self, needs)", before)
            + method("after_generation(self, code, needs)", after))


def baseline(plugin_site, needs) -> dict[str, str]:
    snap, _ = install(plugin_site, {"witness": WITNESS})
    return run_generation(needs, snap).files


# Each mutates what it was given through one route, then fails (its return is discarded).
BEFORE_ATTACKS = {
    "top level": 'needs["project"] = "evil"\nneeds["x-evil"] = 1\ndel needs["stack"]',
    "nested, by index": 'needs["entities"][0]["name"] = "Evil"\n'
                        'needs["entities"][0]["fields"].append({"name": "evil", "type": "text"})',
    "clear everything": 'for e in needs["entities"]:\n    e.clear()\nneeds["entities"].clear()\n'
                        'needs.clear()',
    "get / setdefault / pop": 'needs.get("entities")[0]["fields"].clear()\n'
                              'needs.setdefault("entities", []).append({})\n'
                              'needs.pop("entities")[0].clear()',
    "values / items": 'for v in needs.values():\n    if isinstance(v, list): v.clear()\n'
                      'for k, v in needs.items():\n    if isinstance(v, list): v.append(1)',
    "shallow copies": "\n".join(
        f"try:\n    {statement}\nexcept (IndexError, KeyError):\n    pass" for statement in (
            'dict(needs)["entities"][0]["fields"].clear()', '{**needs}["entities"].clear()',
            'needs.copy()["entities"].append(1)', '(needs | {})["entities"].clear()',
            '__import__("copy").copy(needs)["entities"].clear()',
            'list(needs["entities"])[0]["fields"].clear()', 'needs["entities"][:][0].clear()',
            '(needs["entities"] + [])[0].clear()', '([] + needs["entities"])[0].clear()',
            '(needs["entities"] * 1)[0].clear()',
            'sorted(needs["entities"], key=lambda e: e["name"])[0].clear()')),
    "C-level reads (read-only, refused)": (
        'errors = 0\n'
        'for op in (lambda: dict.values(needs).__iter__().__next__().clear(),\n'
        '           lambda: [v for v in dict.values(needs) if isinstance(v, list)][0].append(1),\n'
        '           lambda: dict.__getitem__(needs, "entities")[0].clear(),\n'
        '           lambda: list.__getitem__(needs["entities"], 0)["fields"].clear()):\n'
        '    try:\n        op()\n    except (TypeError, AttributeError):\n        errors += 1\n'
        'assert errors == 4, errors'),
    "sort / reverse in place": 'needs["entities"].reverse()\nneeds["entities"].sort(key=str)\n'
                               'needs["entities"][0]["fields"].reverse()',
}


@pytest.mark.parametrize("attack", list(BEFORE_ATTACKS))
def test_mutating_the_needs_in_place_reaches_nobody(plugin_site, needs, attack) -> None:
    expected = baseline(plugin_site, needs)
    body = BEFORE_ATTACKS[attack] + '\nraise RuntimeError("done")'
    snap, names = install(plugin_site, {"vandal": hooks(before=body), "witness": WITNESS})
    original = copy.deepcopy(needs)
    result = run_generation(needs, snap)
    statuses = {(h.name, h.hook): (h.status, h.detail) for h in result.plugins}
    assert statuses[(names["vandal"], "before_generation")] == ("failed",
                                                                "RuntimeError: done")
    assert statuses[(names["witness"], "before_generation")][0] == "ok"
    # the witness (before and after), the generator and the caller saw the original needs
    assert result.files == expected
    assert needs == original


def test_mutating_the_code_in_place_reaches_nobody(plugin_site, needs) -> None:
    expected = baseline(plugin_site, needs)
    body = ('first = next(iter(code))\ncode[first] = "evil"\ncode["evil.txt"] = "x"\n'
            'dict(code).clear()\ncode.pop(first)\ncode.clear()\nneeds["entities"].clear()\n'
            'raise RuntimeError("done")')
    snap, _ = install(plugin_site, {"vandal": hooks(after=body), "witness": WITNESS})
    result = run_generation(needs, snap)
    assert result.files == expected


def test_a_kept_reference_changed_after_returning_reaches_nobody(plugin_site, needs) -> None:
    """The keeper returns its needs view unchanged and a changed copy of the code, keeps
    both, and changes them from a later plugin's hook: neither the witness, nor the core's
    result, nor the generator's input see it."""
    keeper = plugin_site.unique("keeper")
    expected = baseline(plugin_site, needs)
    keep = hooks(before="global KEPT_NEEDS\nKEPT_NEEDS = needs\nreturn needs",
                 after='global KEPT_CODE\ncode["kept.txt"] = "mine"\nKEPT_CODE = code\n'
                       'return code')
    plugin_site.install(keeper, source=plugin_source(keeper, body=keep, priority=1))
    module = f"dihya_plugin_{keeper}"
    attack = (f'import {module} as k\n'
              'k.KEPT_NEEDS["entities"][0]["name"] = "Evil"\nk.KEPT_NEEDS.clear()\n')
    attack_code = 'k.KEPT_CODE["kept.txt"] = "changed later"\nk.KEPT_CODE["evil.txt"] = "x"\n'
    vandal = plugin_site.unique("vandal")
    plugin_site.install(vandal, source=plugin_source(
        vandal, priority=2, body=hooks(
            before=attack + "return needs",
            after=f"import {module} as k\n{attack_code}k.KEPT_NEEDS['x-late'] = 1\nreturn code")))
    witness = plugin_site.unique("witness")
    plugin_site.install(witness, source=plugin_source(witness, body=WITNESS, priority=3))
    snap = build_registry(plugin_site.config(*(plugin_site.entry(n)
                                               for n in (keeper, vandal, witness))),
                          path=plugin_site.path)
    assert all(snap.get(n).active for n in (keeper, vandal, witness))
    result = run_generation(needs, snap)
    assert all(h.status == "ok" for h in result.plugins), result.plugins
    assert result.files["kept.txt"] == "mine"
    assert "evil.txt" not in result.files
    got = {k: v for k, v in result.files.items() if k not in ("kept.txt", "seen/code.json")}
    want = {k: v for k, v in expected.items() if k != "seen/code.json"}
    assert got == want
    # what the vandal changed is only the keeper's own (private) objects
    kept = __import__(module)
    assert kept.KEPT_NEEDS == {"x-late": 1} and kept.KEPT_CODE["kept.txt"] == "changed later"


def test_returning_what_was_given_is_accepted_as_it_is(plugin_site, needs) -> None:
    expected = baseline(plugin_site, needs)
    snap, _ = install(plugin_site, {
        "same": hooks(before='x = needs["entities"][0]["fields"]\nreturn needs',
                      after='list(code.items())\nreturn code'),
        "witness": WITNESS})
    result = run_generation(needs, snap)
    assert all(h.status == "ok" for h in result.plugins)
    assert result.files == expected


def test_changing_a_copy_in_place_and_returning_it_works(plugin_site, needs) -> None:
    """The documented contract: each hook's arguments are its own to change."""
    snap, _ = install(plugin_site, {
        "rename": hooks(before='n = dict(needs)\nn["entities"][0]["name"] = "Product"\n'
                               'n["entities"][0]["fields"].append({"name": "sku", '
                               '"type": "string"})\nreturn n',
                        after='code["extra.txt"] = "x"\nreturn code'),
        "witness": WITNESS})
    original = copy.deepcopy(needs)
    result = run_generation(needs, snap)
    assert all(h.status == "ok" for h in result.plugins), result.plugins
    seen = json.loads(result.files["seen/needs.json"])
    assert seen["entities"][0]["name"] == "Product"
    assert [f["name"] for f in seen["entities"][0]["fields"]] == ["label", "sku"]
    assert result.files["extra.txt"] == "x"
    assert needs == original


@pytest.mark.parametrize(("body", "detail"), [
    ("return {1, 2}", "set is not JSON data"),
    ('return {**needs, "x-when": __import__("datetime").date.today()}', "date is not JSON"),
    ("d = {}\nd['x-self'] = d\nd.update(needs)\nreturn d", "not JSON data"),
    ('return {**needs, 3: "x"}', "keys must be strings"),
    ('return {**needs, "x-nan": float("nan")}', "NaN and infinities are not JSON data"),
    ('return {**needs, "x-inf": [float("-inf")]}', "NaN and infinities are not JSON data"),
])
def test_a_return_that_is_not_json_data_is_invalid_output(plugin_site, needs, body,
                                                          detail) -> None:
    snap, names = install(plugin_site, {"bad": hooks(before=body), "witness": WITNESS})
    expected = baseline(plugin_site, needs)
    result = run_generation(needs, snap)
    (bad,) = [h for h in result.plugins if h.name == names["bad"]
              and h.hook == "before_generation"]
    assert bad.status == "invalid-output", bad
    assert detail in bad.detail
    assert result.files == expected


def test_the_remembered_core_code_cannot_be_changed(plugin_site, needs) -> None:
    """The core generator's output is remembered by needs (`pipeline.core_code`): neither
    a plugin changing its code in place nor a caller changing a result reaches the next
    generation with the same needs."""
    expected = baseline(plugin_site, needs)
    snap, _ = install(plugin_site, {
        "vandal": hooks(after='for k in list(code):\n    code[k] = "evil"\n'
                              'code["evil.txt"] = "x"\nraise RuntimeError("done")'),
        "witness": WITNESS})
    first = run_generation(needs, snap)
    assert first.files == expected
    first.files.clear()
    first.files["evil.txt"] = "x"
    again = run_generation(copy.deepcopy(needs), snap)
    assert again.files == expected
    reordered = dict(reversed(list(needs.items())))  # same data, another key order
    assert run_generation(reordered, snap).files.keys() == expected.keys()
