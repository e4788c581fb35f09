"""What a server worker imports to start, and what `dihya serve`'s arbiter does before it
forks: asserted on `sys.modules`, threads and open files of a fresh interpreter, never on
how long anything took.

- `create_app` leaves out what answering a request does not need: the config writer
  (tomlkit), signing (cryptography), authoring, the approval flow (imported by the first
  approval page).
- `import_core` (run by `DihyaServer`, the arbiter) imports the core and prepares its
  templates and validators, and nothing else: no plugin's module, no thread, no store file
  opened, no app.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Modules a started app must not have imported (each is imported by the command or page
#: that needs it).
NOT_AT_START = ("tomlkit", "cryptography", "dihya.authoring", "dihya.approval",
                "dihya.config.edit", "dihya.gate.signing", "rich")

CREATE_APP = """
import json, sys
from dihya.web import create_app
app = create_app(sys.argv[1])
app.extensions["dihya"].close()
print(json.dumps(sorted(sys.modules)))
"""

ARBITER = """
import json, os, sys, threading
from importlib.metadata import entry_points
from dihya.plugin import DEFAULT_GROUP
from dihya.web.serve import DihyaServer, server_options

server = DihyaServer(sys.argv[1], server_options("127.0.0.1", 1, 2))
from dihya.generator.flask_api import environment
from dihya.needs import _fast_validator, _validator
from dihya.web.api import _VALIDATORS

fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
plugins = sorted({ep.module for ep in entry_points(group=DEFAULT_GROUP)})
print(json.dumps({
    "modules": sorted(sys.modules), "plugins": plugins,
    "threads": [t.name for t in threading.enumerate()], "fds": fds,
    "templates": len(environment().cache or {}) if environment().cache is not None else -1,
    "validators": [_fast_validator.cache_info().currsize, _validator.cache_info().currsize,
                   len(_VALIDATORS)],
}))
"""


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "dihya.toml"
    config.write_text("# test config\n[plugins]\nhook_timeout_s = 5.0\n")
    return config


def _run(code: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_create_app_leaves_out_what_no_request_needs(tmp_path: Path) -> None:
    modules = set(json.loads(_run(CREATE_APP, str(_config(tmp_path)), cwd=tmp_path)))
    assert "dihya.web" in modules and "dihya.web.admin" in modules  # the app is complete
    imported = [m for m in NOT_AT_START if m in modules or any(
        n.startswith(m + ".") for n in modules)]
    assert imported == []


def test_the_arbiter_imports_the_core_and_nothing_of_a_plugin(tmp_path: Path) -> None:
    config = _config(tmp_path)
    seen = json.loads(_run(ARBITER, str(config), cwd=tmp_path))
    modules = set(seen["modules"])
    # the core is imported and its first generation's work prepared...
    for module in ("dihya.web", "dihya.web.api", "dihya.web.admin", "dihya.store",
                   "dihya.generator.flask_api", "dihya.store.migrations", "sqlalchemy",
                   "sqlalchemy.dialects.sqlite", "flask"):
        assert module in modules, module
    assert seen["templates"] > 0
    assert seen["validators"][0] == 1 and seen["validators"][1] == 1
    assert seen["validators"][2] >= 3
    # ...and nothing else: no plugin's code, no thread, no store file, no store created
    assert [p for p in seen["plugins"] if p in modules or p.split(".")[0] in modules] == []
    assert seen["threads"] == ["MainThread"]
    assert not [f for f in seen["fds"] if "sqlite" in f or f.startswith(str(tmp_path))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dihya.toml"]
