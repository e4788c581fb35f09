"""Validation of plugin classes against the hook specs: messages name class, method, fix."""

from __future__ import annotations

import pytest

from dihya import GenerationPluginBase
from dihya.plugin import HOOK_SPECS, InvalidPluginError, implemented_hooks, validate_plugin_class


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


def test_wrong_signature_names_class_method_and_expectation() -> None:
    class Bad(GenerationPluginBase):
        def after_generation(self, code):
            return code

    message = check(Bad)
    assert "Bad" in message and "after_generation(self, code)" in message
    expected = "def after_generation(self, code: dict[str, str], needs: dict) -> dict[str, str]"
    assert expected in message


def test_misspelt_hook_suggests_the_right_name() -> None:
    class Typo(GenerationPluginBase):
        def befor_generation(self, needs):
            return needs

    message = check(Typo)
    assert "`befor_generation` is not a hook; did you mean `before_generation`?" in message


def test_unknown_hook_like_method() -> None:
    class Future(GenerationPluginBase):
        def on_deploy(self, needs):
            return None

    assert "no such hook exists" in check(Future)


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
