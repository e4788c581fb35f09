"""Read a plugin class's metadata in a separate, isolated Python process.

Approving a plugin in-process needs its class's `safe` flag, which only importing it can
tell; the import happens in a child (`python -I`, private bytecode cache, scrubbed
environment) so no plugin code runs in the CLI or backend process. The child verifies the
fingerprint again before it imports anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

TIMEOUT_S = 30.0


def introspect(group: str, name: str, fingerprint: str) -> dict[str, Any]:
    """The metadata of plugin `name`; RuntimeError if it cannot be loaded or verified."""
    from dihya.loader import private_pycache_dir

    cmd = [sys.executable, "-I", "-X", f"pycache_prefix={private_pycache_dir()}",
           "-m", "dihya.introspect", group, name, fingerprint]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env=env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"loading the plugin took more than {TIMEOUT_S:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        data = {}
    if proc.returncode != 0 or "error" in data or not data:
        raise RuntimeError(data.get("error") or f"the loader exited {proc.returncode}")
    return data


def _child(group: str, name: str, fingerprint: str) -> dict[str, Any]:
    from dihya.discovery import discover
    from dihya.gate import inspect_files
    from dihya.loader import load_plugins

    matches = [p for p in discover(group) if p.name == name]
    if len(matches) != 1:
        return {"error": f"{len(matches)} entry points named {name!r}"}
    files, problem = inspect_files(matches[0])
    if problem or files is None or files.fingerprint != fingerprint:
        return {"error": "the plugin's files changed while it was being approved"}
    loaded, failed = load_plugins(group, [matches[0].entry_point])
    if name in failed:
        return {"error": f"{failed[name].reason}: {failed[name].message}"}
    cls = loaded[name].cls
    return {"name": cls.name, "version": cls.version, "safe": cls.safe,
            "priority": cls.priority, "description": cls.description, "author": cls.author,
            "hooks": list(loaded[name].hooks)}


if __name__ == "__main__":
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the plugin prints must not corrupt our one line of JSON
    result = _child(*sys.argv[1:4])
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()
    sys.exit(1 if "error" in result else 0)
