"""Dihya generation plugins: the gated, audited plugin ecosystem of Dihya Coding.

Plugin authors need only `GenerationPluginBase`; everything else is the core's.
"""

from __future__ import annotations

from dihya.plugin import (
    ACTION_SPEC,
    HOOK_API_VERSION,
    HOOK_SPECS,
    ActionSpec,
    GenerationPluginBase,
    HookSpec,
    action,
)

__all__ = [
    "ACTION_SPEC",
    "HOOK_API_VERSION",
    "HOOK_SPECS",
    "ActionSpec",
    "GenerationPluginBase",
    "HookSpec",
    "__version__",
    "action",
]

__version__ = "0.1.0"
