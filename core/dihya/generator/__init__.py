"""Core code generators: `generate(needs)` turns checked needs into a code mapping.

`STACKS` maps each known stack name (the `stack` key of the needs) to its generator; every
generator returns relative POSIX paths mapped to file text, the same for the same needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from dihya.generator import flask_api

Generator = Callable[[Mapping[str, Any]], dict[str, str]]

STACKS: Final[Mapping[str, Generator]] = MappingProxyType({flask_api.STACK: flask_api.generate})

__all__ = ["STACKS", "Generator", "generate"]


def generate(needs: Mapping[str, Any]) -> dict[str, str]:
    """The code for `needs` (validated by `dihya.needs.check_needs`): path -> file text.

    Raises `ValueError` for a stack no generator knows.
    """
    stack = needs.get("stack")
    generator = STACKS.get(stack) if isinstance(stack, str) else None
    if generator is None:
        raise ValueError(f"unknown stack {stack!r}; known stacks: {', '.join(sorted(STACKS))}")
    return generator(needs)
