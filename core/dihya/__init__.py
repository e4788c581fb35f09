"""Dihya generation plugins: the gated, audited plugin ecosystem of Dihya Coding.

Plugin authors need only `GenerationPluginBase`; everything else is the core's.
"""

from __future__ import annotations

from dihya.plugin import HOOK_API_VERSION, HOOK_SPECS, GenerationPluginBase, HookSpec

__all__ = ["HOOK_API_VERSION", "HOOK_SPECS", "GenerationPluginBase", "HookSpec", "__version__"]

__version__ = "0.1.0"
