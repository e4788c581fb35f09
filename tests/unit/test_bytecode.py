"""A forged `__pycache__/*.pyc` beside a verified source must never run in its place."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

from support.wheels import plugin_source

GENUINE = '\nMARK = "genuine"\n'
FORGED = '\nMARK = "forged"\n'


def forge_pyc(source: Path, forged_text: str) -> Path:
    """Write a timestamp pyc of `forged_text` that CPython accepts as `source`'s cache."""
    st = source.stat()
    code = compile(forged_text, str(source), "exec")
    # beside the source, where plain Python looks (not this process's private prefix,
    # which an earlier test may have set)
    saved, sys.pycache_prefix = sys.pycache_prefix, None
    try:
        pyc = Path(importlib.util.cache_from_source(str(source)))
    finally:
        sys.pycache_prefix = saved
    pyc.parent.mkdir(exist_ok=True)
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


def run_python(code: str, path: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX",
                                                             "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPATH"] = os.pathsep.join(path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_forged_pyc_is_ignored(plugin_site, tmp_path: Path) -> None:
    name = plugin_site.unique()
    source_text = plugin_source(name) + GENUINE
    plugin_site.install(name, source=source_text)
    entry = plugin_site.entry(name)
    module = f"dihya_plugin_{name}"
    init = plugin_site.site / module / "__init__.py"
    forge_pyc(init, plugin_source(name) + FORGED)

    # Sanity: plain Python does run the forged bytecode.
    assert run_python(f"import {module}; print({module}.MARK)", [str(plugin_site.site)]) == "forged"

    config = tmp_path / "approved.json"
    config.write_text(json.dumps({k: getattr(entry, k) for k in
                                  ("name", "distribution", "version", "fingerprint", "mode")}))
    script = f"""
import json, sys
from pathlib import Path
from dihya.config import AllowEntry, Config
from dihya.registry import build_registry
entry = AllowEntry(**json.loads(Path({str(config)!r}).read_text()))
snap = build_registry(Config(path=Path("x.toml"), exists=False, allow=(entry,)))
record = snap.get({name!r})
print(record.status, sys.modules[{module!r}].MARK)
"""
    assert run_python(script, [str(plugin_site.site), *sys.path[1:]]) == "active genuine"
