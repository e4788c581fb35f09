"""`dihya.store.directwrite.pg_literal`: the literals of the PostgreSQL audit commit (sent
as one simple query). Round trips against a real server: `tests/store/test_audit_fast_append.py`."""

from __future__ import annotations

import math

import pytest

from dihya.store.directwrite import pg_literal, pg_statement


@pytest.mark.parametrize(("value", "literal"), [
    (None, "NULL"), (True, "true"), (False, "false"), (0, "0"), (-7, "-7"),
    (2**70, str(2**70)), ("", "''"), ("it's", "'it''s'"), ("a\\b", "E'a\\\\b'"),
    ("\\'", "E'\\\\'''"), ("é😀", "'é😀'"),
    (1796234861.677154, "'1796234861.677154'::float8"), (1e-7, "'1e-07'::float8"),
])
def test_literals(value: object, literal: str) -> None:
    assert pg_literal(value, None) == literal


def test_a_float_is_written_as_its_shortest_round_trip_text() -> None:
    for x in (0.1, 1 / 3, 1e300, -2.5e-310, 123456789.123456):
        text = pg_literal(x, None)
        assert float(text.removeprefix("'").removesuffix("'::float8")) == x


@pytest.mark.parametrize("value", [math.nan, math.inf, "nul\x00byte", b"bytes"])
def test_anything_else_goes_to_psycopg(value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg import sql

    seen: list[object] = []

    class Literal:
        def __init__(self, v: object) -> None:
            seen.append(v)

        def as_string(self, conn: object) -> str:
            return "<psycopg>"

    monkeypatch.setattr(sql, "Literal", Literal)
    assert pg_literal(value, None) == "<psycopg>"
    assert seen == [value]  # (NaN: the same object)


def test_placeholders_are_filled_once() -> None:
    text = "INSERT INTO t (a, b) VALUES (:a, :b)"
    assert pg_statement(text, {"a": ":b", "b": "x"}, None) == \
        "INSERT INTO t (a, b) VALUES (':b', 'x')"


def test_another_client_encoding_leaves_every_value_to_psycopg(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg import sql

    class Conn:
        class info:  # psycopg's attribute name
            encoding = "shift_jis"

    monkeypatch.setattr(sql.Literal, "as_string", lambda self, conn: "<psycopg>")
    assert pg_statement("VALUES (:a, :b)", {"a": "x", "b": 1}, Conn()) == \
        "VALUES (<psycopg>, <psycopg>)"
