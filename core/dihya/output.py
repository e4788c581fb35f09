"""Write generated files to a directory atomically: all of them, or none.

Files go to a temporary sibling directory which is then renamed into place, so a crash or
an error never leaves a half-written OUTDIR. A non-empty OUTDIR is refused unless `force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dihya.needs import unsafe_path_reason


class OutputError(Exception):
    """The output directory cannot be written as asked; nothing was changed."""


def write_tree(files: Mapping[str, str], outdir: Path, force: bool = False) -> list[str]:
    """Write `files` (relative POSIX path -> text) as the new content of `outdir`."""
    for path in files:
        reason = unsafe_path_reason(path)
        if reason:
            raise OutputError(f"refusing to write {path!r}: {reason}")
    outdir = outdir.absolute()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir} exists and is not a directory")
    non_empty = outdir.is_dir() and any(outdir.iterdir())
    if non_empty and not force:
        raise OutputError(f"{outdir} is not empty; choose an empty or new directory, or pass "
                          "--force to replace its content")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        for rel, text in sorted(files.items()):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        os.chmod(tmp, 0o755)
        _swap_into_place(tmp, outdir, non_empty)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(files)


def _swap_into_place(tmp: Path, outdir: Path, replace: bool) -> None:
    if not replace:
        if outdir.is_dir():
            outdir.rmdir()  # empty: rename cannot replace it portably
        os.rename(tmp, outdir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=outdir.parent))
    old.rmdir()
    os.rename(outdir, old)
    try:
        os.rename(tmp, outdir)
    except BaseException:
        os.rename(old, outdir)
        raise
    shutil.rmtree(old, ignore_errors=True)
