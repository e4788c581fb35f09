"""Plugins log through `self.logger`: a real plugin installed from a wheel, in-process and in
a sandbox worker, logs at import and in each hook, with values taken from needs holding a
name, an e-mail address and a phone number. The records come back redacted (the format
string and the arguments apart), bounded, attributed to the plugin and its version."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from dihya.pipeline import GenerationFailed, run_generation
from dihya.pluginlog import LogLimits, collecting
from dihya.registry import build_registry
from support.wheels import plugin_source

NAME = "Jane Doe"
EMAIL = "jane.doe@example.org"
PHONE = "+33 6 12 34 56 78"

LOGS_EVERYWHERE = '''
def __init__(self):
    self.logger.info("created, mail %s", "ops@corp.example.com")

def before_generation(self, needs):
    contact = needs["x-contact"]
    self.logger.info("tidying for %s <%s>, tel %s", contact["name"], contact["email"],
                     contact["phone"])
    self.logger.warning(f"inline {contact['name'].upper()} wrote from {contact['email']}")
    return needs

def after_generation(self, code, needs):
    self.logger.info("%d files for project %s", len(code), needs["project"])
    for i in range(needs.get("x-flood", 0)):
        self.logger.info("flood %d of %s", i, needs["x-contact"]["name"])
    if needs.get("x-fail"):
        raise RuntimeError("asked to fail")
    return code

def on_generation_error(self, error, needs):
    self.logger.error("failed (%s) for %s", error["type"], needs["x-contact"]["email"])

@action("hello", input_schema={"type": "object", "properties": {"who": {"type": "string"}}})
def hello(self, payload):
    self.logger.info("hello %s", payload["who"])
    return {"ok": True}
'''


def install(plugin_site: Any) -> str:
    name = plugin_site.unique("logs")
    source = ("import logging\nfrom dihya import action\n"
              + plugin_source(name, version="2.1.0", body=LOGS_EVERYWHERE)
              + f'\nlogging.getLogger("dihya.plugin.{name}").info("imported with token %s", '
              '"dihya_0123456789abcdef_SECRETsecretSECRET42")\n')
    plugin_site.install(name, source=source)
    return name


@pytest.fixture
def personal_needs(needs: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(needs)
    out["x-contact"] = {"name": NAME, "email": EMAIL, "phone": PHONE}
    return out


def _snapshot(plugin_site: Any, closing: Any, mode: str, **entry: Any) -> tuple[Any, str]:
    name = install(plugin_site)
    config = plugin_site.config(plugin_site.entry(name, mode=mode, **entry))
    snap = build_registry(config, path=plugin_site.path)
    closing(snap)
    assert snap.get(name).active, snap.get(name).message
    return snap, name


def _text(records: list[Any]) -> str:
    return json.dumps([r.to_json() for r in records], ensure_ascii=False)


def _no_personal_data(text: str) -> None:
    for value in (NAME, "Jane", "JANE", "Doe", EMAIL, "ops@corp.example.com", PHONE,
                  "SECRETsecret"):
        assert value not in text, value


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_records_from_import_and_each_hook_come_back_redacted(
        plugin_site, personal_needs, closing, mode: str) -> None:
    snap, name = _snapshot(plugin_site, closing, mode)
    with collecting("req-7", personal_needs) as logs:
        result = run_generation(personal_needs, snap, request_id="req-7")
    assert {h.status for h in result.plugins} == {"ok"}
    records = logs.finish()
    text = _text(records)
    _no_personal_data(text)
    assert {r.plugin for r in records} == {name}
    assert {r.version for r in records} == {snap.get(name).version}
    assert {r.request_id for r in records} == {"req-7"}
    by_template = {r.template: r for r in records}
    # import time and __init__: made before any call, delivered with the first one
    assert by_template["imported with token %s"].args == ["[token]"]
    assert by_template["created, mail %s"].args == ["[email]"]
    tidy = by_template["tidying for %s <%s>, tel %s"]
    assert tidy.args == ["[needs]", "[email]", "[phone]"]
    assert tidy.message == "tidying for [needs] <[email]>, tel [phone]"
    assert tidy.level == "INFO"
    # an f-string puts the values in the format string itself: redacted there too
    inline = next(r for r in records if r.template.startswith("inline "))
    assert inline.template == "inline [needs] wrote from [email]"
    assert inline.level == "WARNING"
    files = by_template["%d files for project %s"]
    assert files.args[0] == len(result.files) and files.args[1] == "[needs]"


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_on_generation_error_logs_are_collected_too(plugin_site, personal_needs, closing,
                                                    mode: str) -> None:
    snap, _name = _snapshot(plugin_site, closing, mode, required=True)
    personal_needs["x-fail"] = True
    with collecting(None, personal_needs) as logs, pytest.raises(GenerationFailed):
        run_generation(personal_needs, snap)
    records = logs.finish()
    _no_personal_data(_text(records))
    failed = [r for r in records if r.template == "failed (%s) for %s"]
    assert [(r.level, r.args) for r in failed] == [("ERROR", ["failed", "[email]"])]


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_a_flood_is_capped_and_counted(plugin_site, personal_needs, closing, mode: str) -> None:
    snap, _name = _snapshot(plugin_site, closing, mode)
    personal_needs["x-flood"] = 5000
    with collecting(None, personal_needs, LogLimits(records=50, record_bytes=300)) as logs:
        run_generation(personal_needs, snap)
    records = logs.finish()
    assert len(records) == 51
    last = records[-1]
    assert last.level == "WARNING" and last.args[1] == 50
    # 5000 flood lines + the records before them, less the 50 kept
    assert last.args[0] >= 5000 + 5 - 50
    _no_personal_data(_text(records))


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_a_long_record_is_cut_after_redaction(plugin_site, personal_needs, closing,
                                              mode: str) -> None:
    snap, _name = _snapshot(plugin_site, closing, mode)
    personal_needs["x-contact"]["name"] = NAME + " " + "x" * 3000
    with collecting(None, personal_needs, LogLimits(records=50, record_bytes=256)) as logs:
        run_generation(personal_needs, snap)
    records = logs.finish()
    assert all(len(r.template.encode()) + sum(len(a.encode()) for a in r.args
                                             if isinstance(a, str)) <= 256 for r in records)
    _no_personal_data(_text(records))


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_an_action_logs_with_its_payload_redacted(plugin_site, closing, mode: str) -> None:
    snap, name = _snapshot(plugin_site, closing, mode)
    record = snap.get(name)
    payload = {"who": NAME}
    from dihya.pipeline import default_executor

    with collecting("req-a", payload) as logs:
        assert default_executor(record).call(record, "hello", {"payload": payload}, 5.0) == {
            "ok": True}
    records = logs.finish()
    hello = [r for r in records if r.template == "hello %s"]
    assert [r.args for r in hello] == [["[needs]"]]
    _no_personal_data(_text(records))


FAILS_AFTER_LOGGING = '''
def before_generation(self, needs):
    self.logger.warning("about to fail for %s", needs["x-contact"]["email"])
    raise RuntimeError("no")

def after_generation(self, code):
    self.logger.warning("returning a set")
    return {"not", "json"}
'''


@pytest.mark.parametrize("mode", ["in-process", "sandbox"])
def test_what_a_failing_hook_logged_is_kept(plugin_site, personal_needs, closing,
                                            mode: str) -> None:
    name = plugin_site.unique("fails")
    plugin_site.install(name, source=plugin_source(name, body=FAILS_AFTER_LOGGING))
    snap = build_registry(plugin_site.config(plugin_site.entry(name, mode=mode)),
                          path=plugin_site.path)
    closing(snap)
    with collecting(None, personal_needs) as logs:
        result = run_generation(personal_needs, snap)
    assert [h.status for h in result.plugins] == ["failed", "invalid-output"]
    records = logs.finish()
    assert [(r.template, r.args) for r in records] == [
        ("about to fail for %s", ["[email]"]), ("returning a set", [])]
