"""The public plugin contract: `GenerationPluginBase` and the hook specifications.

`HOOK_SPECS` is the single source of truth for hooks: the loader validates plugin classes
against it, the pipeline calls hooks by it and `docs/hooks.md` is generated from it.
"""

from __future__ import annotations

import functools
import inspect  # already imported by attrs: free here
import itertools
import logging
import re
from collections.abc import Callable
from contextvars import ContextVar
from types import FunctionType
from typing import Any, ClassVar, Final, TypeVar

import attrs
from packaging.version import InvalidVersion, Version

from dihya.reasons import FixedReasonError, Reason

#: Version of the hook API that plugins target (semver: a new hook or a new argument of a
#: hook is a minor bump, a changed or removed hook a major one). Hooks are called by keyword
#: and an implementation takes the arguments it names, a subset of the spec's, so a plugin
#: written against 1.0 runs unchanged on 1.1.
HOOK_API_VERSION: Final = "1.1"
#: The dihya-core releases that implement hook API `HOOK_API_VERSION`: what a plugin that
#: targets this hook API puts in its `Requires-Dist: dihya-core...` (the scaffold writes
#: it, and its tox envs test against the lowest and the newest release of the range).
SUPPORTED_CORE_RANGE: Final = ">=0.1,<0.2"
#: The entry-point group plugins declare themselves in (`[plugins] group` can change it).
DEFAULT_GROUP: Final = "dihya.generation_plugins"

JSON = Any
_F = TypeVar("_F", bound=Callable[..., Any])
Needs = dict[str, Any]
Code = dict[str, str]


class GenerationPluginBase:
    """Base class of every Dihya generation plugin.

    Subclass it, set the metadata attributes and override the hooks you need; hooks you
    do not override are never called. Entry point group: ``dihya.generation_plugins``.
    """

    #: Human-readable name (the entry-point name is the plugin's identity).
    name: ClassVar[str] = ""
    #: One sentence saying what the plugin does.
    description: ClassVar[str] = ""
    #: PEP 440 version of the plugin.
    version: ClassVar[str] = "0.0.0"
    #: Author or publisher.
    author: ClassVar[str] = ""
    #: True when the author vouches that the plugin may run in the backend's process.
    safe: ClassVar[bool] = False
    #: Lower runs first; ties are broken by entry-point name.
    priority: ClassVar[int] = 100

    @property
    def logger(self) -> logging.Logger:
        """This plugin's logger, `dihya.plugin.<entry-point name>`: a standard
        `logging.Logger`. Its records reach the operator (`dihya plugins logs NAME`) with
        personal data replaced by placeholders; see the plugin author guide."""
        name = getattr(self, "_dihya_entry_point", None) or type(self).name or "unnamed"
        return logging.getLogger(f"dihya.plugin.{name}")

    # Overrides may take any subset of a hook's arguments, by name (see HOOK_SPECS):
    # `def after_generation(self, code)` is a valid implementation.

    def before_generation(self, needs: Needs, context: dict[str, Any]) -> Needs:
        """Return the (possibly changed) needs; gets a private copy."""
        return needs

    def after_generation(self, code: Code, needs: Needs, context: dict[str, Any]) -> Code:
        """Return the (possibly changed) code mapping; gets private copies."""
        return code

    def on_generation_error(self, error: dict[str, Any], needs: Needs,
                            context: dict[str, Any]) -> None:
        """Be told that the generation failed; the return value is ignored."""
        return None


@attrs.frozen
class HookArg:
    """One argument of a hook, as documented and as checked."""

    name: str
    type: str
    doc: str
    since: str = "1.0"          # the hook API version that added it
    deprecated: str | None = None  # why and what to use instead, when it is deprecated


@attrs.frozen
class HookSpec:
    """Everything the core knows about one hook."""

    name: str
    args: tuple[HookArg, ...]
    returns: str
    returns_doc: str
    summary: str
    validated: tuple[str, ...]
    example: str
    since: str = "1.0"
    # the argument the return value replaces (the sandbox then sends only what changed)
    replaces: str | None = None
    deprecated: str | None = None  # why and what to use instead, when it is deprecated

    @property
    def signature(self) -> str:
        params = ", ".join(["self", *(f"{a.name}: {a.type}" for a in self.args)])
        return f"{self.name}({params}) -> {self.returns}"

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)


_NEEDS_ARG = HookArg("needs", "dict", "The needs, validated against the needs schema "
                     "(see `docs/needs.md`). A private deep copy: changing it affects nobody.")
_CONTEXT_ARG = HookArg(
    "context", "dict", 'About this generation, without personal data: `{"hook_api_version": '
    'str, "request_id": str | None, "role": str | None, "plugins": [str, ...]}`: the hook '
    "API the core implements, the HTTP request's id (None from the CLI), the caller's role "
    "(None for the operator), and the entry-point names of the plugins that run, in call "
    "order. A private copy.", since="1.1")

HOOK_SPECS: Final[tuple[HookSpec, ...]] = (
    HookSpec(
        name="before_generation",
        args=(_NEEDS_ARG, _CONTEXT_ARG),
        replaces="needs",
        returns="dict",
        returns_doc="The needs to generate from, given to the next plugin and then to the "
        "core generator.",
        summary="Called before the core generator runs, in (priority, name) order. "
        "Normalise, enrich or default the needs.",
        validated=(
            "the return value is validated against the needs schema again, with the same "
            "limits (1 MiB, 100 entities, 100 fields each)",
            "an exception, an invalid return or a timeout skips this plugin's change: the "
            "next plugin gets the needs as they were before it",
        ),
        example='''def before_generation(self, needs):
    for entity in needs["entities"]:
        entity["name"] = entity["name"].strip()
    return needs''',
    ),
    HookSpec(
        name="after_generation",
        args=(
            HookArg("code", "dict[str, str]", "The generated files: relative POSIX paths "
                    "mapped to their text. A private copy."),
            HookArg("needs", "dict", "The needs the code was generated from (after every "
                    "`before_generation`). A private copy."),
            _CONTEXT_ARG,
        ),
        replaces="code",
        returns="dict[str, str]",
        returns_doc="The files to write: the given mapping changed, extended or trimmed.",
        summary="Called after the core generator produced the code, in (priority, name) "
        "order. Add files, annotate or rewrite them.",
        validated=(
            "the return value must map relative POSIX paths to text: no absolute path, no "
            "`..` segment, no backslash, no empty segment",
            "at most 500 files, each at most 1 MiB of UTF-8",
            "an exception, an invalid return or a timeout skips this plugin's change",
        ),
        example='''def after_generation(self, code):  # takes only the arguments it needs
    code["CONTRIBUTORS.md"] = "# Contributors\\n"
    return code''',
    ),
    HookSpec(
        name="on_generation_error",
        args=(
            HookArg("error", "dict", 'What went wrong, without personal data: '
                    '`{"stage": "plugin" | "generator", "type": str, "plugin": str | None}`; '
                    '`type` is the failing hook\'s status (`failed`, `timeout`, '
                    '`invalid-output`) or `invalid-code` when the core generator\'s output '
                    'was invalid; `plugin` names the required plugin that failed.'),
            _NEEDS_ARG,
            _CONTEXT_ARG,
        ),
        returns="None",
        returns_doc="Nothing: the return value is ignored.",
        summary="Called when a generation fails (invalid generator output or a failing "
        "`required` plugin), for cleanup or alerting.",
        validated=("an exception or a timeout is reported and otherwise ignored",),
        example='''def on_generation_error(self, error, context):
    self.failures.append((context["request_id"], error["type"]))''',
    ),
)

HOOKS_BY_NAME: Final = {spec.name: spec for spec in HOOK_SPECS}
_HOOK_NAMES: Final = tuple(HOOKS_BY_NAME)
# each spec's argument names, made once: {name: (the spec, its arg_names)}
_ARG_NAMES: Final = {spec.name: (spec, spec.arg_names) for spec in HOOK_SPECS}

#: Plugin actions: JSON in, JSON out, exposed at
#: `POST /api/v1/plugins/<plugin>/actions/<action>` behind authentication and the plugin's
#: ACL. Declared with the `@action(...)` decorator on a method of this signature.
ACTION_SPEC: Final = HookSpec(
    name="<action>",
    args=(HookArg("payload", "dict", "The request body, already validated against the "
                  "action's `input_schema`. A private copy."),),
    returns="dict",
    returns_doc="A JSON object, sent back to the caller as the response body.",
    summary="A plugin action, declared with `@dihya.action(name, input_schema=...)`. Callers "
    "with a role the plugin's ACL allows (`developer` or `admin`) call it over HTTP.",
    validated=(
        "the request body is validated against `input_schema` before the plugin sees it; "
        "a violation is a 422 listing every problem with its JSON pointer",
        "the return value must be a JSON object of at most 1 MiB, else the caller gets a 502",
        "an exception or a timeout is a 502 for the caller; the backend goes on",
        "every call is audited (plugin, action, outcome, sizes, duration)",
    ),
    example='''@action("shout", input_schema={"type": "object", "required": ["text"],
                             "properties": {"text": {"type": "string", "maxLength": 100}}})
def shout(self, payload):
    return {"text": payload["text"].upper()}''',
)
_ACTION_NAME: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_ACTION_ATTR: Final = "__dihya_action__"


@attrs.frozen
class ActionSpec:
    """One action a plugin declares: its name, method, description and input schema."""

    name: str
    method: str
    description: str
    input_schema: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "input_schema": self.input_schema}


def action(name: str, *, input_schema: dict[str, Any],
           description: str = "") -> Callable[[_F], _F]:
    """Declare a method as a plugin action (see `ACTION_SPEC`)."""

    def mark(func: _F) -> _F:
        setattr(func, _ACTION_ATTR, (name, description, input_schema))
        return func

    return mark


def plugin_actions(cls: type, marked: Marked | None = None) -> dict[str, ActionSpec]:
    """The actions a plugin class declares, by action name (`marked`: `marked_actions(cls)`,
    when the caller has it)."""
    marked = marked_actions(cls) if marked is None else marked
    found: dict[str, ActionSpec] = {}
    for klass in reversed(cls.__mro__) if marked else ():  # the base classes' first
        for owner, attr, _value, marker in marked:
            if owner is klass:
                name, description, schema = marker
                found[name] = ActionSpec(name, attr, description, schema)
    return dict(sorted(found.items()))


# (class, attribute, value, marker) of each attribute that carries an action marker
Marked = list[tuple[type, str, Any, Any]]


def marked_actions(cls: type) -> Marked:
    """The attributes carrying an `@action` marker, along the MRO (`cls` first; `object`
    skipped: a built-in type's attributes cannot carry one), each class's in its order."""
    found: Marked = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for attr, value in vars(klass).items():
            marker = getattr(value, _ACTION_ATTR, None)
            if marker is not None:
                found.append((klass, attr, value, marker))
    return found


_METADATA_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "name": (str,),
    "description": (str,),
    "version": (str,),
    "author": (str,),
    "safe": (bool,),
    "priority": (int,),
}


class InvalidPluginError(FixedReasonError):
    """A plugin class breaks the contract; the message says where and what is expected."""

    REASON = Reason.INVALID_PLUGIN


def implemented_hooks(cls: type) -> tuple[str, ...]:
    """Names of the hooks that `cls` overrides, in spec order."""
    return tuple(
        spec.name
        for spec in HOOK_SPECS
        if getattr(cls, spec.name, None) is not getattr(GenerationPluginBase, spec.name)
    )


def validate_plugin_class(obj: object, where: str, *,
                          params: Params | None = None) -> type[GenerationPluginBase]:
    """Check `obj` (what an entry point resolved to) against the contract.

    Raises `InvalidPluginError` with a message naming `where` (the entry point), the class,
    the method and what was expected; returns the class when it is valid. `params`: how a
    hook's parameters are read (default `parameters`; `shared_parameters()` to read each
    method's once across this call and the loader's `hook_arguments`, ...).
    """
    if not (isinstance(obj, type) and issubclass(obj, GenerationPluginBase)):
        raise InvalidPluginError(
            f"{where}: {obj!r} is not a subclass of dihya.GenerationPluginBase; the entry "
            "point must name a class like `class MyPlugin(GenerationPluginBase): ...`"
        )
    cls: type[GenerationPluginBase] = obj
    return _validated(cls, where, params or parameters, hook_methods(cls),
                      marked_actions(cls))


def loading_facts(obj: object, where: str) -> tuple[
        type[GenerationPluginBase], tuple[str, ...], dict[str, ActionSpec],
        dict[str, tuple[str, ...]], list[str]]:
    """`validate_plugin_class(obj, where)` and what the loader reads of the class: (class,
    `implemented_hooks`, `plugin_actions`, `hook_arguments`, `deprecation_warnings`), each
    the same as alone; the hook methods, their parameters and the action markers looked up
    once for all of them."""
    if not (isinstance(obj, type) and issubclass(obj, GenerationPluginBase)):
        validate_plugin_class(obj, where)  # raises, saying why
    cls: type[GenerationPluginBase] = obj  # type: ignore[assignment]
    params, methods, marked = shared_parameters(), hook_methods(cls), marked_actions(cls)
    _validated(cls, where, params, methods, marked)
    return (cls, implemented_hooks(cls), plugin_actions(cls, marked),
            hook_arguments(cls, params, methods),
            deprecation_warnings(cls, params_of=params, methods=methods))


def _validated(cls: type[GenerationPluginBase], where: str, params: Params,
               methods: dict[str, Any], marked: Marked) -> type[GenerationPluginBase]:
    """`validate_plugin_class` of a subclass, with its hook methods and action markers."""
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    problems: list[str] = []
    for attr, types in _METADATA_TYPES.items():
        value = getattr(cls, attr)
        bad_bool = attr == "priority" and isinstance(value, bool)
        if not isinstance(value, types) or bad_bool:
            want = " or ".join(t.__name__ for t in types)
            problems.append(f"attribute `{attr}` is {type(value).__name__} {value!r}, "
                            f"expected {want}")
    if isinstance(cls.version, str) and not _pep440(cls.version):
        problems.append(f"attribute `version` = {cls.version!r} is not a PEP 440 version")
    for spec in HOOK_SPECS:
        if spec.name in methods:
            problems.extend(_signature_problems(cls, spec, params, methods))
    problems.extend(_unknown_hook_problems(cls))
    problems.extend(_action_problems(cls, marked))
    if problems:
        raise InvalidPluginError(f"{where}: class {qualname}: " + "; ".join(problems))
    return cls


@functools.lru_cache(maxsize=1024)
def _pep440(version: str) -> bool:
    """True when `version` parses as a PEP 440 version (plugins share a few versions)."""
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


Params = Callable[[Any], list[tuple[str, Any]]]


def shared_parameters() -> Params:
    """`parameters`, remembered per function for as long as the returned callable lives
    (one class's validation and facts read each hook's parameters once, not three times)."""
    seen: dict[int, tuple[Any, list[tuple[str, Any]]]] = {}

    def params(func: Any) -> list[tuple[str, Any]]:
        hit = seen.get(id(func))
        if hit is not None and hit[0] is func:
            return hit[1]
        found = parameters(func)
        seen[id(func)] = (func, found)
        return found

    return params


def _hook_method(cls: type, spec: HookSpec, methods: dict[str, Any] | None = None) -> Any:
    """The function implementing `spec` in `cls` (None when only the base class has it);
    `methods`: `hook_methods(cls)`, when the caller has it."""
    if methods is not None:
        return methods.get(spec.name)
    for klass in cls.__mro__:
        if klass is GenerationPluginBase:
            return None
        if spec.name in klass.__dict__:
            return klass.__dict__[spec.name]
    return None


def hook_methods(cls: type) -> dict[str, Any]:
    """{hook name: what `_hook_method` gives} for the hooks of `HOOK_SPECS` that a class
    below `GenerationPluginBase` in `cls`'s MRO defines: one walk for every hook."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is GenerationPluginBase:
            break
        names = klass.__dict__
        for name in _HOOK_NAMES:
            if name in names and name not in found:
                found[name] = names[name]
    return found


def _arg_names(spec: HookSpec) -> tuple[str, ...]:
    """`spec.arg_names`, made once per spec of `HOOK_SPECS` (any other spec: computed)."""
    known = _ARG_NAMES.get(spec.name)
    if known is not None and known[0] is spec:
        return known[1]
    return spec.arg_names


def parameters(func: Any) -> list[tuple[str, Any]]:
    """(name, `inspect.Parameter` kind) of each parameter of `func`, in the order
    `inspect.signature(func).parameters` gives them. A plain function's are read from its
    code object (co_varnames, co_argcount, ...: a fresh process validating many plugin
    classes paid for `inspect.signature` three times per hook); anything else — a function
    with `__wrapped__` or `__signature__` (which `inspect.signature` follows), a callable
    that is not a plain function — through `inspect.signature` itself."""
    code = getattr(func, "__code__", None)
    if (type(func) is not FunctionType or code is None
            or "__wrapped__" in func.__dict__ or "__signature__" in func.__dict__):
        return [(p.name, p.kind) for p in inspect.signature(func).parameters.values()]
    names = code.co_varnames
    positional, posonly, kwonly = code.co_argcount, code.co_posonlyargcount, \
        code.co_kwonlyargcount
    flags = code.co_flags
    if not (posonly or kwonly or flags & _VAR_FLAGS):  # the common case: one C-level zip
        return list(zip(names[:positional], _POK_REPEATED, strict=False))
    found: list[tuple[str, Any]] = [
        (names[i], _POSITIONAL_ONLY if i < posonly else _POSITIONAL_OR_KEYWORD)
        for i in range(positional)]
    at = positional + kwonly
    if flags & inspect.CO_VARARGS:
        found.append((names[at], _VAR_POSITIONAL))
        at += 1
    found += [(names[i], _KEYWORD_ONLY) for i in range(positional, positional + kwonly)]
    if flags & inspect.CO_VARKEYWORDS:
        found.append((names[at], _VAR_KEYWORD))
    return found


# `inspect.Parameter`'s kinds, looked up once (an enum member's lookup is not free)
_POSITIONAL_ONLY: Final = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD: Final = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR_POSITIONAL: Final = inspect.Parameter.VAR_POSITIONAL
_KEYWORD_ONLY: Final = inspect.Parameter.KEYWORD_ONLY
_VAR_KEYWORD: Final = inspect.Parameter.VAR_KEYWORD
_FIRST_KINDS: Final = (_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD)
_NOT_BY_KEYWORD: Final = (_VAR_POSITIONAL, _POSITIONAL_ONLY)
_VAR_FLAGS: Final = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
_POK_REPEATED: Final = itertools.repeat(_POSITIONAL_OR_KEYWORD)
_NOT_PLAIN_METHOD: Final = (staticmethod, classmethod)


def _signature_problems(cls: type, spec: HookSpec, params_of: Params = parameters,
                        methods: dict[str, Any] | None = None) -> list[str]:
    """An implementation takes `self` and any subset of the spec's arguments, by name (in
    any order, keyword-only or not, with or without defaults), or `**kwargs` for all."""
    method = _hook_method(cls, spec, methods)
    if method is None:
        return []
    if isinstance(method, _NOT_PLAIN_METHOD) or not inspect.isfunction(method):
        return [f"hook `{spec.name}` must be a plain method, such as `def {spec.signature}`"]
    params = params_of(method)
    if not params or params[0][1] not in _FIRST_KINDS:
        return [f"hook `{spec.name}` must take `self` first, such as `def {spec.signature}`"]
    problems = []
    arg_names = _arg_names(spec)
    for name, param_kind in params[1:]:
        if param_kind is _VAR_KEYWORD:
            continue
        if param_kind in _NOT_BY_KEYWORD:
            problems.append(f"hook `{spec.name}`: argument `{name}` cannot be "
                            "positional-only or `*args`: hooks are called by keyword")
        elif name not in arg_names:
            known = ", ".join(f"`{a.name}`" + (f" (since hook API {a.since})"
                                               if a.since != "1.0" else "")
                              for a in spec.args)
            problems.append(f"hook `{spec.name}`: argument `{name}` is not an argument "
                            f"of this hook; it takes any of {known}")
    return problems


def hook_arguments(cls: type, params_of: Params = parameters,
                   methods: dict[str, Any] | None = None) -> dict[str, tuple[str, ...]]:
    """For each hook `cls` implements, the spec's arguments it takes (in spec order): what
    a call passes it, by keyword. `**kwargs` takes them all. `methods`: `hook_methods(cls)`,
    when the caller has it."""
    found = {}
    for spec in HOOK_SPECS:
        method = _hook_method(cls, spec, methods)
        if method is None:
            continue
        kinds = dict(params_of(method))  # {parameter name: its kind}, names unique
        arg_names = _arg_names(spec)
        if _VAR_KEYWORD in kinds.values():
            found[spec.name] = arg_names
        else:
            found[spec.name] = tuple(filter(kinds.__contains__, arg_names))
    return found


def deprecation_warnings(cls: type, specs: tuple[HookSpec, ...] | None = None,
                         params_of: Params = parameters,
                         methods: dict[str, Any] | None = None) -> list[str]:
    """What `cls` uses that the hook API deprecates: implemented hooks, and arguments it
    takes, marked deprecated in `specs` (default: HOOK_SPECS). Shown at approval, in
    `plugins show` (warnings) and in the hooks reference. `methods`: `hook_methods(cls)`
    (for `HOOK_SPECS`' hooks), when the caller has it."""
    warnings = []
    for spec in specs if specs is not None else HOOK_SPECS:
        method = _hook_method(cls, spec, methods if specs is None else None)
        if method is None or not inspect.isfunction(method):
            continue
        if spec.deprecated:
            warnings.append(f"hook `{spec.name}` is deprecated: {spec.deprecated}")
        if not any(a.deprecated for a in spec.args):
            continue  # no argument of it is deprecated: its parameters do not matter
        taken = {name for name, _kind in params_of(method)}
        warnings.extend(f"argument `{a.name}` of hook `{spec.name}` is deprecated: "
                        f"{a.deprecated}" for a in spec.args if a.deprecated and a.name in taken)
    return warnings


# Set by a sandbox worker while it loads its plugin: an action's `input_schema` is then
# checked for being a dict of `"type": "object"` only, not against the JSON Schema
# meta-schema, which the backend checks on every worker's hello before it uses it
# (`dihya.sandbox.admission.checked_meta`: it trusts nothing a worker says). The worker
# then never imports jsonschema to start (issue #16); in-process, nothing changes.
SCHEMAS_CHECKED_BY_BACKEND: ContextVar[bool] = ContextVar("schemas_checked_by_backend",
                                                          default=False)


def _action_problems(cls: type, marked: Marked | None = None) -> list[str]:
    problems: list[str] = []
    seen: dict[str, str] = {}
    for klass, attr, value, marker in marked_actions(cls) if marked is None else marked:
        if klass is not cls and attr in vars(cls):
            continue
        name, description, schema = marker
        where = f"action `{attr}`"
        if not isinstance(name, str) or not _ACTION_NAME.match(name):
            problems.append(f"{where}: name {name!r} must match {_ACTION_NAME.pattern}")
        elif name in seen and seen[name] != attr:
            problems.append(f"{where}: action name {name!r} is also used by "
                            f"`{seen[name]}`")
        seen.setdefault(str(name), attr)
        if not isinstance(description, str):
            problems.append(f"{where}: description must be a string")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            problems.append(f"{where}: input_schema must be a JSON Schema of an object "
                            '({"type": "object", ...})')
        elif not SCHEMAS_CHECKED_BY_BACKEND.get():
            import jsonschema  # only classes with actions pay for it

            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                problems.append(f"{where}: input_schema is not a valid JSON Schema: "
                                f"{exc.message}")
        params = list(inspect.signature(value).parameters) if inspect.isfunction(value) else []
        if params != ["self", "payload"]:
            problems.append(f"{where}: method `{attr}({', '.join(params)})` has the wrong "
                            f"signature, expected `def {attr}(self, payload: dict) -> dict`")
    return problems


def _unknown_hook_problems(cls: type) -> list[str]:
    """A public method whose name is a near miss of a hook's (`befor_generation`): surely
    a typo, which would make the hook silently never called. Other methods are helpers."""
    problems: list[str] = []
    own = {
        name
        for klass in cls.__mro__
        if klass is not GenerationPluginBase and klass is not object
        for name, value in vars(klass).items()
        if callable(value) and not name.startswith("_") and not hasattr(value, _ACTION_ATTR)
    }
    others = sorted(own - HOOKS_BY_NAME.keys())
    if not others:  # the usual plugin: difflib (≈ 1-2 ms to import) is not needed
        return problems
    import difflib

    for name in others:
        close = difflib.get_close_matches(name, HOOKS_BY_NAME, n=1, cutoff=0.85)
        if close:
            problems.append(f"method `{name}` is not a hook; did you mean `{close[0]}`? "
                            f"expected `def {HOOKS_BY_NAME[close[0]].signature}`")
    return problems
