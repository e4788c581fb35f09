"""`validate_code_from`: a hook's code checked against the valid code it was given finds
every problem `validate_code` finds, while not checking again the files it gave back
as they were."""

from __future__ import annotations

import random

import pytest

from dihya.needs import MAX_FILES, validate_code, validate_code_from
from dihya.pipeline import run_generation
from dihya.registry import build_registry
from dihya.sandbox.cow import freeze
from support.wheels import plugin_source

BASE = freeze({"README.md": "# shop\n", "docs/API.md": "api\n", "app/item.py": "x = 1\n",
               "app/api/item.py": "y = 2\n"})


def _problems(found: list) -> set[tuple[str, str]]:
    return {(p.path, p.message) for p in found}


@pytest.mark.parametrize("code", [
    {**BASE, "docs": "a file where a directory is"},  # an added key under which others go
    {**BASE, "app": "same, two levels up"},
    {**BASE, "../escape.txt": "x"},
    {**BASE, "/abs.txt": "x"},
    {**BASE, "README.md": "\ud800"},  # a changed text that is not Unicode
    {**BASE, "README.md": 5},
    {**BASE, "app/api/item.py/deeper.py": "a file through another"},
    {**BASE, **{f"f{i}.txt": "x" for i in range(MAX_FILES)}},
    [],
])
def test_what_validate_code_refuses_is_refused(code) -> None:
    expected = validate_code(code)
    assert expected, "not an invalid case"
    assert _problems(validate_code_from(code, BASE)) == _problems(expected)


def test_the_files_given_back_as_they_were_are_not_checked_again() -> None:
    # a path the check would refuse, held by `base` (as if it had passed): not looked at
    base = freeze({"ok.txt": "fine", "not/../checked": "kept"})
    code = {**base, "new.txt": "new"}
    assert validate_code_from(code, base) == []
    assert validate_code(code)  # the full check looks at every file


def test_random_edits_find_what_the_full_check_finds() -> None:
    rng = random.Random(16)
    paths = ["a", "a/b", "a/b/c.txt", "d.md", "e/f.py", "e", "../x", "g/./h", "ok.txt"]
    texts = ["t", "u", "\ud800", "v"]
    for _ in range(3000):
        base = freeze({p: rng.choice(texts[:2]) for p in rng.sample(paths, rng.randint(0, 5))})
        if validate_code(base):
            continue
        code = dict(base)
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(paths)
            if rng.random() < 0.3:
                code.pop(key, None)
            else:
                code[key] = rng.choice(texts)
        assert _problems(validate_code_from(code, base)) == _problems(validate_code(code)), code


def test_a_plugin_adding_a_file_where_a_directory_is_fails(plugin_site, needs) -> None:
    """End to end, in-process: `app` as a file, beside the generator's `app/...` files
    the plugin gave back unchanged, is invalid output."""
    name = plugin_site.unique("dirfile")
    plugin_site.install(name, source=plugin_source(name, body=(
        "def after_generation(self, code, needs):\n"
        "    code['app'] = 'a file'\n"
        "    return code\n")))
    snap = build_registry(plugin_site.config(plugin_site.entry(name, mode="in-process")),
                          path=plugin_site.path)
    try:
        result = run_generation(needs, snap)
    finally:
        snap.close()
    (hook,) = [h for h in result.plugins if h.name == name]
    assert hook.status == "invalid-output" and "goes through 'app'" in (hook.detail or "")
    assert "app" not in result.files
