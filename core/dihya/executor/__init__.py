"""How hooks are called: one interface, with an in-process and (later) a sandboxed runner.

The pipeline only knows `HookExecutor`; which executor serves a plugin is decided by its
approval's `mode`, so the sandbox plugs in without touching the pipeline.
"""

from __future__ import annotations

from dihya.executor.base import (
    HookExecutor,
    HookRaised,
    HookTimeout,
    HookUnavailable,
    json_copy,
    same_json,
)
from dihya.executor.inprocess import InProcessExecutor

__all__ = [
    "HookExecutor",
    "HookRaised",
    "HookTimeout",
    "HookUnavailable",
    "InProcessExecutor",
    "json_copy",
    "same_json",
]
