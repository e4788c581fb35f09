"""Validation of plugin classes against the hook specs: messages name class, method, fix."""

from __future__ import annotations

from typing import Any

import pytest

from dihya import GenerationPluginBase
from dihya.plugin import (
    HOOK_SPECS,
    InvalidPluginError,
    hook_arguments,
    implemented_hooks,
    validate_plugin_class,
)


def check(cls: object) -> str:
    with pytest.raises(InvalidPluginError) as info:
        validate_plugin_class(cls, "entry point 'x'")
    return str(info.value)


def test_valid_plugin_and_its_hooks() -> None:
    class Good(GenerationPluginBase):
        name, version, safe, priority = "good", "1.2.3", True, 5

        def after_generation(self, code, needs):
            return code

        def helper(self):  # a public helper that looks nothing like a hook is fine
            return 1

    assert validate_plugin_class(Good, "ep") is Good
    assert implemented_hooks(Good) == ("after_generation",)


def test_not_a_subclass() -> None:
    class Loose:
        def before_generation(self, needs):
            return needs

    message = check(Loose)
    assert "not a subclass of dihya.GenerationPluginBase" in message
    assert "entry point 'x'" in message
    assert "not a subclass" in check(lambda: None)


def test_an_argument_the_hook_lacks_is_named_with_the_plugin_and_the_hook() -> None:
    class Bad(GenerationPluginBase):
        def after_generation(self, code, extra):
            return code

    message = check(Bad)
    assert "entry point 'x'" in message and "Bad" in message
    assert "hook `after_generation`: argument `extra` is not an argument of this hook" in message
    assert "`code`, `needs`, `context` (since hook API 1.1)" in message


def test_implementations_take_any_subset_of_the_arguments_by_name() -> None:
    class Subset(GenerationPluginBase):
        def before_generation(self, needs):  # written against hook API 1.0
            return needs

        def after_generation(self, code):  # only what it uses
            return code

        def on_generation_error(self, *, context, error=None):  # keyword-only, any order
            return None

    class Everything(GenerationPluginBase):
        def after_generation(self, **kwargs):
            return kwargs["code"]

    assert validate_plugin_class(Subset, "ep") is Subset
    assert hook_arguments(Subset) == {"before_generation": ("needs",),
                                      "after_generation": ("code",),
                                      "on_generation_error": ("error", "context")}
    assert hook_arguments(Everything) == {"after_generation": ("code", "needs", "context")}


def test_positional_only_and_star_args_are_refused() -> None:
    class Star(GenerationPluginBase):
        def after_generation(self, *args):
            return args[0]

    class PositionalOnly(GenerationPluginBase):
        def after_generation(self, code, /):
            return code

    assert "`args` cannot be positional-only or `*args`" in check(Star)
    assert "`code` cannot be positional-only" in check(PositionalOnly)


def test_deprecated_hooks_and_arguments_are_reported() -> None:
    import attrs

    from dihya.authoring.docgen import render_hooks
    from dihya.plugin import deprecation_warnings

    after = next(s for s in HOOK_SPECS if s.name == "after_generation")
    needs = next(a for a in after.args if a.name == "needs")
    specs = (attrs.evolve(after, args=tuple(
        attrs.evolve(a, deprecated="use `context`") if a is needs else a for a in after.args)),
        attrs.evolve(next(s for s in HOOK_SPECS if s.name == "before_generation"),
                     deprecated="normalise needs in `after_generation`"))

    class Old(GenerationPluginBase):
        def before_generation(self, needs):
            return needs

        def after_generation(self, code, needs):
            return code

    class New(GenerationPluginBase):
        def after_generation(self, code):
            return code

    assert deprecation_warnings(Old, specs) == [
        "argument `needs` of hook `after_generation` is deprecated: use `context`",
        "hook `before_generation` is deprecated: normalise needs in `after_generation`"]
    assert deprecation_warnings(New, specs) == []
    assert deprecation_warnings(Old) == []  # nothing is deprecated in hook API 1.1
    reference = render_hooks(specs)
    assert "**Deprecated**: normalise needs in `after_generation`" in reference
    assert "**deprecated**: use `context`" in reference


def test_misspelt_hook_suggests_the_right_name() -> None:
    class Typo(GenerationPluginBase):
        def befor_generation(self, needs):
            return needs

    message = check(Typo)
    assert "`befor_generation` is not a hook; did you mean `before_generation`?" in message


def test_helpers_named_like_hooks_are_fine() -> None:
    class Helpers(GenerationPluginBase):
        def on_deploy(self, needs):  # a helper, not a typo of a hook
            return None

        def before_anything(self):
            return None

    assert validate_plugin_class(Helpers, "ep") is Helpers


@pytest.mark.parametrize(("attr", "value", "expected"), [
    ("safe", "yes", "expected bool"),
    ("priority", True, "expected int"),
    ("priority", "1", "expected int"),
    ("version", "one", "PEP 440"),
    ("name", None, "expected str"),
])
def test_bad_metadata_types(attr: str, value: object, expected: str) -> None:
    cls = type("Meta", (GenerationPluginBase,), {attr: value})
    message = check(cls)
    assert f"`{attr}`" in message and expected in message


def test_staticmethod_hook_is_refused() -> None:
    class Static(GenerationPluginBase):
        @staticmethod
        def before_generation(needs):
            return needs

    assert "plain method" in check(Static)


def test_specs_cover_the_base_class() -> None:
    for spec in HOOK_SPECS:
        assert callable(getattr(GenerationPluginBase, spec.name))


def _functions_of_every_shape() -> list[object]:
    import functools

    def plain(self, needs): ...  # type: ignore[no-untyped-def]
    def defaults(self, needs=1, *, code=2): ...  # type: ignore[no-untyped-def]
    def posonly(self, needs, /, code, *args, context, **kwargs): ...  # type: ignore[no-untyped-def]
    def star(*args): ...  # type: ignore[no-untyped-def]
    def kwargs_only(**kw): ...  # type: ignore[no-untyped-def]
    def nothing(): ...  # type: ignore[no-untyped-def]
    def kwonly_star(self, *, needs, code=None, **rest): ...  # type: ignore[no-untyped-def]
    def with_locals(self, needs):  # type: ignore[no-untyped-def]
        a = b = 1
        return a + b

    def closure(self, needs):  # type: ignore[no-untyped-def]
        return plain

    @functools.wraps(plain)
    def wrapped(*args, **kwargs): ...  # type: ignore[no-untyped-def]

    def signed(*args): ...  # type: ignore[no-untyped-def]
    import inspect
    signed.__signature__ = inspect.signature(plain)  # type: ignore[attr-defined]
    lam = lambda self, code, needs=None: None  # noqa: E731
    return [plain, defaults, posonly, star, kwargs_only, nothing, kwonly_star, with_locals,
            closure, wrapped, signed, lam, functools.partial(posonly, 1), len, print]


def test_parameters_read_from_code_objects_are_those_of_inspect_signature() -> None:
    """`dihya.plugin.parameters` reads a plain function's parameters from its code object;
    for every shape of function (and the fallbacks) it must say what inspect says."""
    import inspect

    from dihya.plugin import parameters

    for func in _functions_of_every_shape():
        expected = [(p.name, p.kind) for p in inspect.signature(func).parameters.values()]
        assert parameters(func) == expected, func


def _every_signature() -> list[Any]:
    """A function for each combination of positional-only, positional, `*args`,
    keyword-only and `**kwargs` parameters (with a local variable after them, which the
    code object lists after the parameters)."""
    import itertools

    funcs = []
    for posonly, positional, star, kwonly, kwargs in itertools.product(
            (0, 1, 2), (0, 1, 2), (False, True), (0, 1, 2), (False, True)):
        parts = [f"p{i}" for i in range(posonly)] + (["/"] if posonly else [])
        parts += [f"a{i}" for i in range(positional)]
        parts += ["*args"] if star else (["*"] if kwonly else [])
        parts += [f"k{i}" for i in range(kwonly)]
        parts += ["**kw"] if kwargs else []
        namespace: dict[str, Any] = {}
        exec(f"def f({', '.join(parts)}):\n    local = 1\n    return local", namespace)
        funcs.append(namespace["f"])
    return funcs


def test_parameters_of_every_combination_of_kinds_are_those_of_inspect_signature() -> None:
    """The code-object reading has a shortcut for a function with only positional-or-keyword
    parameters (one `zip`); every other mix of kinds takes the general path. Both must say
    what inspect says, for each combination of kinds and counts."""
    import inspect

    from dihya.plugin import parameters

    for func in _every_signature():
        expected = [(p.name, p.kind) for p in inspect.signature(func).parameters.values()]
        assert parameters(func) == expected, inspect.signature(func)


def test_hook_arguments_are_the_specs_arguments_the_method_takes_by_name() -> None:
    """`hook_arguments` (what a call passes a hook): `**kwargs` takes every argument of the
    spec, otherwise the spec's arguments the method names, in the spec's order — the same
    as computed from `inspect.signature`, whatever order or kind the method lists them in."""
    import inspect

    from dihya.plugin import HOOK_SPECS, hook_arguments

    spec = next(s for s in HOOK_SPECS if len(s.arg_names) >= 2)
    first, second = spec.arg_names[:2]
    shapes = [f"self, {second}, {first}", f"self, *, {first}", f"self, {second}=None, **kw",
              "self", f"self, unknown, {second}", "self, *args"]
    for shape in shapes:
        namespace: dict[str, Any] = {"GenerationPluginBase": GenerationPluginBase}
        exec(f"class P(GenerationPluginBase):\n    def {spec.name}({shape}):\n        pass",
             namespace)
        cls = namespace["P"]
        params = inspect.signature(getattr(cls, spec.name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            expected = spec.arg_names
        else:
            expected = tuple(n for n in spec.arg_names if n in params)
        assert hook_arguments(cls)[spec.name] == expected, shape
