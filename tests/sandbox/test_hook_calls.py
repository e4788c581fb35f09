"""Hooks are called by keyword and an implementation takes the arguments it names: a plugin
written against hook API 1.0 runs unchanged on 1.1, which added `context`. Real plugins
installed from wheels, in-process and in sandbox workers."""

from __future__ import annotations

import json

import pytest

from dihya.pipeline import run_generation
from dihya.plugin import HOOK_API_VERSION
from dihya.registry import build_registry
from support.wheels import plugin_source

WRITTEN_FOR_1_0 = '''
def before_generation(self, needs):
    needs["description"] = "seen by a 1.0 plugin"
    return needs

def after_generation(self, code, needs):
    code["v10.txt"] = needs["description"]
    return code
'''

USES_CONTEXT = '''
def after_generation(self, code, context):
    code["context.json"] = json.dumps(context, sort_keys=True)
    return code

def on_generation_error(self, *, context):
    return None
'''

TAKES_A_STRANGER = '''
def after_generation(self, code, request):
    return code
'''


def install(plugin_site, key: str, body: str, mode: str, priority: int = 100) -> str:
    name = plugin_site.unique(key)
    source = "import json\n" + plugin_source(name, body=body, priority=priority)
    plugin_site.install(name, source=source)
    return name


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_a_plugin_written_against_1_0_and_one_using_context(plugin_site, needs, closing,
                                                            mode: str) -> None:
    old = install(plugin_site, "old", WRITTEN_FOR_1_0, mode, priority=1)
    new = install(plugin_site, "ctx", USES_CONTEXT, mode, priority=2)
    config = plugin_site.config(*(plugin_site.entry(n, mode=mode) for n in (old, new)))
    snap = build_registry(config, path=plugin_site.path)
    closing(snap)
    assert snap.get(old).hook_args == {"before_generation": ("needs",),
                                       "after_generation": ("code", "needs")}
    assert snap.get(new).hook_args == {"after_generation": ("code", "context"),
                                       "on_generation_error": ("context",)}
    result = run_generation(needs, snap, role="developer", request_id="req-1")
    assert {h.name: h.status for h in result.plugins} == {old: "ok", new: "ok"}
    assert result.files["v10.txt"] == "seen by a 1.0 plugin"
    assert json.loads(result.files["context.json"]) == {
        "hook_api_version": HOOK_API_VERSION, "plugins": [old, new], "request_id": "req-1",
        "role": "developer"}


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_an_argument_the_hook_does_not_have_is_named(plugin_site, closing, mode: str) -> None:
    name = install(plugin_site, "stranger", TAKES_A_STRANGER, mode)
    snap = build_registry(plugin_site.config(plugin_site.entry(name, mode=mode)),
                          path=plugin_site.path)
    closing(snap)
    record = snap.get(name)
    assert (record.status, record.reason) == ("failed", "invalid-plugin")
    assert f"'{name}'" in record.message
    assert "hook `after_generation`: argument `request` is not an argument" in record.message
