"""A worker starts importing less (issue #16): what it no longer imports gains a plugin nothing.

The worker no longer imports jsonschema (an action's input schema is checked against the
meta-schema by the backend, on the hello), nor `packaging.requirements` / `packaging.tags`,
`dihya.config`, `ctypes.util` (and with it subprocess) or `secrets` before its
plugin. A hostile plugin imports them itself, after every layer is in force: it can neither
start a process through them, nor write the shared bytecode cache (where the bytecode of a
module it is the first to import would go), nor get an invalid action schema admitted.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from sandbox_support import sandboxed

from dihya.pipeline import run_generation
from dihya.plugin import GenerationPluginBase, InvalidPluginError, action, validate_plugin_class
from dihya.sandbox import bytecode
from dihya.sandbox.layers import probe
from support.wheels import plugin_source

# what a worker no longer imports before its plugin (the plugin's own imports come later)
# (`tempfile` aside: importlib.metadata imports it, through importlib.resources)
NOT_PRELOADED = ("jsonschema", "subprocess", "secrets", "ctypes.util",
                 "packaging.tags", "packaging.requirements", "dihya.config")

LATE_IMPORTS = '''#!full
import importlib.util, json, os, sys

FOUND = {"preloaded": sorted(m for m in NOT_PRELOADED if m in sys.modules)}

def attempt(name, fn):
    try:
        FOUND[name] = ["ok", repr(fn())]
    except BaseException as exc:
        FOUND[name] = [type(exc).__name__, getattr(exc, "errno", None)]

import subprocess, tempfile, ctypes.util, jsonschema, secrets  # now, under every layer
import packaging.tags, packaging.requirements

attempt("subprocess", lambda: subprocess.run(["/bin/true"], check=False).returncode)
attempt("find_library", lambda: ctypes.util.find_library("c"))  # runs ldconfig
# jsonschema works for the plugin (read-only, as any library on the import path)
attempt("jsonschema", lambda: jsonschema.Draft202012Validator({"type": "object"}).is_valid({}))
prefix = sys.pycache_prefix or ""
# the bytecode of a standard module no warm-up imports: the first to import it would
# write it into the shared cache, where every later worker would read it
source = importlib.util.find_spec("colorsys").origin
target = importlib.util.cache_from_source(source)
FOUND["target"] = target
def plant():
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)
attempt("plant", plant)
attempt("mkstemp", lambda: tempfile.mkstemp(dir=prefix))
import colorsys  # compiled here: the write into the cache must fail (silently)
''' + plugin_source("NAME", body="""
def after_generation(self, code, needs):
    code["late.json"] = json.dumps(FOUND)
    return code
""")

BAD_SCHEMA = '''
@action("go", input_schema={"type": "object", "properties": 5})
def go(self, payload):
    return {}
'''


def _require(*names: str) -> None:
    missing = [n for n in names if probe()[n] != "available"]
    if missing:
        pytest.skip(f"layers unavailable here: {[(n, probe()[n]) for n in missing]}")


def test_modules_a_worker_no_longer_preloads_give_a_plugin_nothing(plugin_site, needs,
                                                                    closing) -> None:
    _require("seccomp", "landlock")
    source = LATE_IMPORTS.replace("NOT_PRELOADED", repr(NOT_PRELOADED))
    snap, names = sandboxed(plugin_site, {"late": source})
    closing(snap)
    record = snap.get(names["late"])
    assert record.active, record.message
    found = json.loads(run_generation(needs, snap).files["late.json"])
    # the lean start itself: none of them was there before the plugin's first line
    assert found["preloaded"] == [], found["preloaded"]
    # seccomp refuses the process whichever module asks for it
    assert found["subprocess"][0] == "PermissionError", found["subprocess"]
    assert found["find_library"][0] != "ok" or "None" in found["find_library"][1] \
        or found["find_library"][1].startswith("'libc"), found["find_library"]
    assert found["jsonschema"] == ["ok", "True"]
    if "bwrap" not in " ".join(record.isolation) and os.geteuid() != 0:
        pytest.skip("without bwrap or a user switch the worker keeps a private cache")
    cache = bytecode.cache_dir()
    assert cache is not None
    assert found["target"].startswith(str(cache)), found
    assert found["plant"][0] != "ok", "a sandboxed plugin wrote into the shared bytecode cache"
    assert found["mkstemp"][0] != "ok", found["mkstemp"]
    target = Path(found["target"])
    if target.exists():  # only ever written by a backend's warm-up, never by a worker
        assert target.stat().st_uid == os.getuid()
        assert target.stat().st_size > 0


def test_an_invalid_action_schema_is_refused_by_the_backend(plugin_site, needs,
                                                            closing) -> None:
    # the worker no longer checks it against the meta-schema: the backend does, on the
    # hello, and admits nothing a worker says without that check
    source = plugin_source("NAME", body=BAD_SCHEMA).replace(
        "from dihya import GenerationPluginBase", "from dihya import GenerationPluginBase, action")
    snap, names = sandboxed(plugin_site, {"bad": "#!full\n" + source})
    closing(snap)
    record = snap.get(names["bad"])
    assert not record.active
    assert record.status == "failed" and record.reason == "invalid-plugin", record
    assert "invalid input schema" in record.message and "5" in record.message, record.message
    assert names["bad"] not in {h.name for h in run_generation(needs, snap).plugins
                               if h.status == "ok"}


def test_in_process_the_class_check_still_checks_the_schema() -> None:
    class Bad(GenerationPluginBase):
        name = "bad-schema"
        description = "bad"
        version = "1.0.0"
        author = "tests"

        @action("go", input_schema={"type": "object", "properties": 5})
        def go(self, payload: dict) -> dict:
            return {}

    with pytest.raises(InvalidPluginError, match="not a valid JSON Schema"):
        validate_plugin_class(Bad, "tests")
    assert importlib.util.find_spec("jsonschema") is not None
