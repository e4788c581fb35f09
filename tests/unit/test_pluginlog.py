"""Redaction and bounds of plugin log records: what is replaced, what is kept, how the caps
count; the capture handler keeps the format string and the arguments apart."""

from __future__ import annotations

import logging

import pytest

from dihya.pluginlog import LogLimits, Redactor, capture_call, collecting, logger_for
from dihya.pluginlog.capture import MAX_WIRE_BYTES
from dihya.pluginlog.redact import needs_strings

NEEDS = {"project": "shop", "entities": [{"name": "Customer", "fields": [
    {"name": "email", "type": "string"}]}],
    "x-contact": {"name": "Jane Doe", "email": "jane.doe@example.org",
                  "phone": "+33 6 12 34 56 78", "initials": "JD"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("for Jane Doe", "for [needs]"),
    ("JANE wrote", "[needs] wrote"),  # case-insensitive, and each word of a value
    ("Doe, Jane", "[needs], [needs]"),
    ("mail jane.doe@example.org", "mail [email]"),
    ("other bob@corp.example.com", "other [email]"),  # any address, even one not in the needs
    ("tel +33 6 12 34 56 78", "tel [phone]"),
    ("tel 06.12.34.56.78 or (555) 123-4567", "tel [phone] or [phone]"),
    ("token dihya_0123abcd_S3cretS3cret", "token [token]"),
    ("Authorization: Bearer abc.def", "Authorization: [token]"),
    ("key AbCdEf0123456789AbCdEf0123", "key [token]"),
    ("JD signed", "[needs] signed"),  # short values alone...
    ("JDK and ajd", "JDK and ajd"),  # ...but never inside another word
    ("the email field of Customer", "the [needs] field of [needs]"),
    # what is not personal stays readable
    ("12 files in 3.5 ms on 2026-12-02 10:40:00, v1.2.3", "12 files in 3.5 ms on 2026-12-02 "
                                                         "10:40:00, v1.2.3"),
])
def test_what_is_replaced(text: str, expected: str) -> None:
    assert Redactor(needs_strings(NEEDS)).text(text) == expected


def test_placeholders_survive_needs_holding_their_words() -> None:
    redactor = Redactor(["email", "phone", "token", "needs"])
    assert redactor.text("a@b.example and 0612345678") == "[email] and [phone]"


def test_arguments_keep_their_types() -> None:
    redactor = Redactor(["Jane"])
    assert redactor.args(["Jane", 3, 1.5, None, True]) == ["[needs]", 3, 1.5, None, True]
    assert redactor.args({"who": "Jane", "n": 2}) == {"who": "[needs]", "n": 2}


class _Target:
    name = "unit"
    version = "1.0"


def test_capture_keeps_format_and_arguments_apart_and_collects_per_plugin() -> None:
    from dihya.pluginlog import deliver

    logger = logger_for("unit")
    with collecting("r", NEEDS, LogLimits(records=3, record_bytes=256)) as collector:
        with capture_call("unit") as buffer:
            logger.info("hello %s <%s>", "Jane Doe", "jane.doe@example.org")
            logger.debug("below the level: not kept")
            try:
                raise ValueError("Jane Doe")
            except ValueError:
                logger.exception("failed for %(who)s", {"who": "Jane"})
            logger.warning("x" * (MAX_WIRE_BYTES + 1))  # too large: dropped, counted
            for i in range(5):
                logger.info("n %d", i)
        deliver(_Target(), buffer.take(), {})
        records = collector.finish()
    first, second, third, dropped = records
    assert (first.template, first.args) == ("hello %s <%s>", ["[needs]", "[email]"])
    assert first.message == "hello [needs] <[email]>"
    assert (second.level, second.args, second.error) == ("ERROR", {"who": "[needs]"},
                                                          "ValueError")
    assert second.message == "failed for [needs] [ValueError]"
    assert third.template == "n %d" and third.args == [0]
    # 1 too large + 4 over the cap of 3
    assert (dropped.level, dropped.args) == ("WARNING", [5, 3])
    assert {r.plugin for r in records} == {"unit"} and {r.request_id for r in records} == {"r"}


def test_nothing_collects_outside_a_generation() -> None:
    from dihya.pluginlog import deliver

    with capture_call("unit") as buffer:
        logger_for("unit").info("alone")
    deliver(_Target(), buffer.take(), {})  # dropped quietly
    assert logging.getLogger("dihya.plugin").propagate is False


def test_a_record_is_cut_to_the_cap_after_redaction() -> None:
    from dihya.pluginlog import deliver

    with collecting(None, {"who": "Jane Doe"}, LogLimits(records=5, record_bytes=256)) as c:
        wire = {"at": 1.0, "level": "INFO", "msg": "m %s", "args": ["Jane Doe " * 200]}
        deliver(_Target(), {"records": [wire], "dropped": 0}, {})
        [record] = c.finish()
    assert len(record.template.encode()) + len(record.args[0].encode()) <= 256
    assert record.cut_bytes > 0 and "Jane" not in record.args[0]


def test_untrusted_batches_are_coerced() -> None:
    from dihya.pluginlog import deliver

    with collecting(None, {}, LogLimits()) as c:
        deliver(_Target(), {"records": ["no", {"level": "LOUD", "msg": ["x"], "at": "then",
                                                "args": "y", "error": 5}], "dropped": -3}, {})
        deliver(_Target(), "garbage", {})
        records = c.finish()
    kept = [r for r in records if r.template != records[-1].template]
    assert len(kept) == 1 and kept[0].level == "WARNING" and kept[0].args == []
    assert kept[0].template == "['x']" and kept[0].error is None
    assert records[-1].args[0] == 1  # the string "no" counted as dropped
