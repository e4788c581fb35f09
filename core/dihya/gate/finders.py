"""The import system's finders by kind, and the context a persisted import-path memo is for.

`dihya.gate.pathmemo` remembers module resolutions keyed on the finders they consulted. In
one process the finders are compared by identity; a memo read back in another process can
only compare what a finder *is*: its kind. A finder's kind is its type (module and
qualified name) and, for the standard path-entry finder (`FileFinder`), its directory and
the loaders it tries per suffix; a path hook's kind is its function (module, qualified
name) and the kinds of what its closure holds (`FileFinder.path_hook` closes over the
loader details). Two finders of one kind answer the same for the same directory listing:
that is why only standard finders are ever compared this way (`pathmemo` refuses to
remember anything when a finder is not standard).

`context()` names what changes the meaning of a persisted memo as a whole — the
interpreter (path, version, cache tag), `sys.path`, and the kinds of the `sys.meta_path`
finders and `sys.path_hooks` — as a short hash: the verification cache keeps the memo in a
file of that name and ignores a memo written for another context.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import sys
import types
from typing import Any

Kind = tuple[Any, ...]


def kind(obj: Any, depth: int = 0) -> Any:
    """A value made of strings, numbers, None and tuples that says what `obj` is, equal for
    two finders or hooks that behave alike (see the module docstring)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if depth > 4:
        return ("deep", type(obj).__module__, type(obj).__qualname__)
    if isinstance(obj, type):
        return ("type", obj.__module__, obj.__qualname__)
    if isinstance(obj, (tuple, list)):
        return tuple(kind(x, depth + 1) for x in obj)
    if isinstance(obj, types.FunctionType):
        cells = tuple(kind(c.cell_contents, depth + 1) for c in obj.__closure__ or ())
        return ("function", obj.__module__, obj.__qualname__, cells)
    if isinstance(obj, types.BuiltinFunctionType):
        return ("builtin", getattr(obj, "__module__", None), obj.__qualname__)
    if isinstance(obj, importlib.machinery.FileFinder) and type(obj) is \
            importlib.machinery.FileFinder:
        loaders = tuple((suffix, kind(loader, depth + 1))
                        for suffix, loader in getattr(obj, "_loaders", ()))
        return ("FileFinder", obj.path, loaders)
    return ("object", type(obj).__module__, type(obj).__qualname__)


def context() -> str:
    """A short hash of the interpreter, `sys.path` and the finder kinds of this process."""
    facts = (sys.executable, sys.version, sys.implementation.cache_tag, tuple(sys.path),
             kind(tuple(sys.meta_path)), kind(tuple(sys.path_hooks)))
    return hashlib.sha256(repr(facts).encode("utf-8", "surrogateescape")).hexdigest()[:16]
