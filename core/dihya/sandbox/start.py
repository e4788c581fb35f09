"""How a sandbox process is started: no `site`, an explicit import path, what it may read.

Workers (and the bytecode warm-up) run `python -I -S -c BOOTSTRAP SPEC`: `-S` keeps `site`
from processing `.pth` files (whose `import` lines are code that no gate has seen) and from
importing `sitecustomize`; the bootstrap sets `sys.path` from SPEC, then hands over to
`dihya.sandbox.worker`. The import path is the backend's own, so a plugin and its
requirements resolve in the worker exactly as the gate resolved them in the backend.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

# Only the standard library runs before `sys.path` is set; nothing of `site`.
BOOTSTRAP: Final = ("import json, sys\n"
                    "spec = json.loads(sys.argv[1])\n"
                    "sys.path[:] = spec['sys_path']\n"
                    "from dihya.sandbox.worker import main\n"
                    "sys.exit(main(sys.argv))\n")


def import_path(extra: Sequence[str] = ()) -> list[str]:
    """The worker's `sys.path`: `extra` first, then this process's entries that exist,
    without the current directory and directories never shown to a worker (`/tmp`...).
    A directory that a `.pth` file added to the backend's path is kept (as a plain
    entry); the `.pth` file's code lines never run in a worker."""
    from dihya.sandbox.outer import NEVER_BOUND

    cwd = os.path.realpath(os.getcwd())
    path: list[str] = []
    for entry in [*extra, *sys.path]:
        if (entry and entry not in path and os.path.exists(entry)
                and os.path.realpath(entry) not in (cwd, *NEVER_BOUND)):
            path.append(entry)
    return path


def read_only_paths(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """What a worker may read: the Python installation, its import path and the core."""
    import dihya

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(dihya.__file__).resolve().parent), *import_path(), *extra}
    return tuple(sorted(os.path.realpath(p) for p in paths))


def python_argv(spec: dict[str, Any], pycache_prefix: str) -> list[str]:
    """The command line of a sandbox process for `spec` (which holds its `sys_path`)."""
    return [sys.executable, "-I", "-S", "-X", f"pycache_prefix={pycache_prefix}", "-c",
            BOOTSTRAP, json.dumps(spec)]
