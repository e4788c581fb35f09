"""How hooks are called: one interface, with an in-process and (later) a sandboxed runner.

The pipeline only knows `HookExecutor`; which executor serves a plugin is decided by its
approval's `mode`, so the sandbox plugs in without touching the pipeline.
"""

from __future__ import annotations

from dihya.executor.base import (
    HookExecutor,
    HookInvalidOutput,
    HookRaised,
    HookTimeout,
    HookUnavailable,
    SandboxViolation,
    is_invalid_output,
    json_copy,
    same_json,
)
from dihya.executor.inprocess import InProcessExecutor

__all__ = [
    "HookExecutor",
    "HookInvalidOutput",
    "HookRaised",
    "HookTimeout",
    "HookUnavailable",
    "InProcessExecutor",
    "SandboxViolation",
    "is_invalid_output",
    "json_copy",
    "same_json",
]
