"""Where an author's files belong: keys and the core wheel in user dirs, not a git tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

#: The default file name of `dihya plugins keygen`'s private key (in `key_dir()`).
DEFAULT_KEY_NAME: Final = "publisher.key"


def config_home(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/dihya`, else `~/.config/dihya`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "dihya"


def cache_home(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/dihya`, else `~/.cache/dihya`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "dihya"


def key_dir(environ: dict[str, str] | None = None) -> Path:
    """Where keygen writes private keys by default: `<config home>/keys`."""
    return config_home(environ) / "keys"


def git_work_tree(path: Path) -> Path | None:
    """The top of the git work tree `path` (a file or directory, existing or not) lies in,
    or None. Looks for a `.git` directory or file (a worktree, a submodule) in `path`'s
    existing ancestors; runs no git. `..` and links are resolved first: `../x` from inside
    a checkout is outside it, and a link into a checkout is inside it."""
    here = Path(os.path.realpath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None
