"""Core code generators: `generate(needs)` turns checked needs into a code mapping.

`STACKS` maps each known stack name (the `stack` key of the needs) to its generator; every
generator returns relative POSIX paths mapped to file text, the same for the same needs.

The generators (`flask_api`: Jinja2 and its templates) are imported on first use (`STACKS`
or `generate`, PEP 562), not with the package: a module that needs only the naming rules
(`dihya.generator.naming`, which plugins reach through `dihya.collection_path`...) does
not pay for Jinja2, and neither does a sandbox worker that loads such a plugin at every
start (issue #16).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

Generator = Callable[[Mapping[str, Any]], dict[str, str]]

if TYPE_CHECKING:
    STACKS: Mapping[str, Generator]

__all__ = ["STACKS", "Generator", "generate"]


def _stacks() -> Mapping[str, Generator]:
    from dihya.generator import flask_api

    stacks: Mapping[str, Generator] = MappingProxyType({flask_api.STACK: flask_api.generate})
    globals()["STACKS"] = stacks
    return stacks


def __getattr__(name: str) -> Any:
    if name == "STACKS":
        return _stacks()
    if name == "flask_api":
        return importlib.import_module("dihya.generator.flask_api")
    raise AttributeError(f"module 'dihya.generator' has no attribute {name!r}")


def generate(needs: Mapping[str, Any]) -> dict[str, str]:
    """The code for `needs` (validated by `dihya.needs.check_needs`): path -> file text.

    Raises `ValueError` for a stack no generator knows.
    """
    stacks = globals().get("STACKS") or _stacks()
    stack = needs.get("stack")
    generator = stacks.get(stack) if isinstance(stack, str) else None
    if generator is None:
        raise ValueError(f"unknown stack {stack!r}; known stacks: {', '.join(sorted(stacks))}")
    return generator(needs)
