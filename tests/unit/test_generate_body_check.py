"""The generate body's check without jsonschema gives jsonschema's verdict."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from dihya.web.api import GENERATE_BODY, validate_body
from dihya.web.problems import ApiProblem

BODIES: list[Any] = [{"needs": {}}, {"needs": {"a": [1]}}, {}, {"needs": {}, "x": 1},
                     {"needs": []}, {"needs": None}, {"needs": "x"}, [], "needs", None,
                     {"Needs": {}}, {"needs": {}, "needs ": {}}]


@pytest.mark.parametrize("body", BODIES)
def test_the_same_verdict_as_jsonschema(body: Any) -> None:
    valid = jsonschema.Draft202012Validator(GENERATE_BODY).is_valid(body)
    try:
        validate_body(GENERATE_BODY, body)
        accepted = True
    except ApiProblem as exc:
        assert exc.status == 422
        accepted = False
    assert accepted == valid
