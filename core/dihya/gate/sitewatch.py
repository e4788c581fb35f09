"""A cheap stamp of the installed distributions, for `[plugins] auto_reload`.

An install, an upgrade or a removal changes the modification time of the site-packages
directory (a `*.dist-info` directory appears or goes) or of a `*.dist-info` directory (pip
writes RECORD last, by renaming it into place). The stamp is those times for every
directory on `sys.path`: one `scandir` per directory and one `stat` per distribution,
no file read. Editing an installed file in place changes no stamp; `dihya plugins reload`
covers that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

SiteStamp = tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]


def site_stamp(path: Sequence[str] | None = None) -> SiteStamp:
    """(directory, its mtime, ((dist-info name, its mtime), ...)) for each path entry."""
    stamps = []
    for entry in sys.path if path is None else path:
        if not entry:
            continue  # the current directory: never a place plugins are installed
        try:
            mtime = os.stat(entry).st_mtime_ns
            with os.scandir(entry) as it:
                infos = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in it
                                     if e.name.endswith((".dist-info", ".egg-info", ".pth"))))
        except OSError:  # not a directory (a zip), gone, unreadable
            continue
        stamps.append((entry, mtime, infos))
    return tuple(stamps)
