"""The worker protocol's frames (msgspec JSON): strict decoding of what a worker sends,
what a plugin may not send back, and malformed frames from a hostile plugin."""

from __future__ import annotations

import json
import os
import struct

import pytest
from sandbox_support import hook, sandboxed, statuses

from dihya.pipeline import run_generation
from dihya.sandbox import protocol
from dihya.sandbox.protocol import ProtocolError

WITNESS = hook('code["witness.txt"] = "still here"\nreturn code')


@pytest.mark.parametrize(("body", "message"), [
    (b'{"id": 1, "ok": true, "value": NaN}', "not JSON"),
    (b'{"id": 1, "ok": true, "value": Infinity}', "not JSON"),
    (b'{"id": 1, "ok": true, "value": -Infinity}', "not JSON"),
    (b'{"id": 1, "ok": true, "value": 1e400}', "not JSON"),
    (b'{"id": 1, "value": ' + b"9" * 5000 + b"}", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b"", "not JSON"),
    (b'{"id": 1', "not JSON"),
    (b'{"id": 1} trailing', "not JSON"),
    (b'{"a": "\xff\xfe"}', "not JSON"),
    (b"\xef\xbb\xbf{}", "not JSON"),
    (b"[" * 100_000, "not a JSON object"),
    (b'{"a": ' * 100_000, "nested too deeply"),
])
def test_a_malformed_frame_is_a_protocol_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        protocol.decode(body)
    read, write = os.pipe()
    try:
        if len(body) < 60_000:  # what a pipe holds without a reader
            os.write(write, struct.pack(">I", len(body)) + body)
            with pytest.raises(ProtocolError):
                protocol.read_frame(read, None)
    finally:
        os.close(read)
        os.close(write)


def test_frames_keep_big_integers_and_unicode_and_unknown_keys() -> None:
    message = {"id": 7, "ok": True, "value": {"big": 10 ** 30, "neg": -(2 ** 70),
                                              "text": "é ü \u2028 \U0001f600", "f": 0.1},
               "logs": [{"level": "info", "message": "an extension a side may ignore"}]}
    frame = protocol.encode(message)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert protocol.decode(frame[4:]) == message
    assert json.loads(frame[4:]) == message, "the frame is plain JSON"


def test_the_size_limit_holds_both_ways() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit of 100"):
        protocol.encode({"value": "x" * 200}, max_bytes=100)
    read, write = os.pipe()
    try:
        os.write(write, struct.pack(">I", 101) + b"{}")
        with pytest.raises(ProtocolError, match="101 bytes announced, the limit is 100"):
            protocol.read_frame(read, None, max_bytes=100)
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize(("value", "error"), [
    (float("nan"), ValueError), (float("inf"), ValueError), ([1.0, -float("inf")], ValueError),
    (10 ** 5000, ValueError), ({1, 2}, TypeError), (b"bytes", TypeError),
    ({1: "int key"}, TypeError), (object(), TypeError), ({"a": [{"b": {2}}]}, TypeError),
], ids=lambda v: type(v).__name__)
def test_check_json_refuses_what_json_dumps_refuses(value, error) -> None:
    with pytest.raises(error):
        protocol.check_json(value)
    if value != {1: "int key"}:  # json.dumps writes it as "1"; the frames refuse it
        with pytest.raises((TypeError, ValueError)):
            json.dumps(value, allow_nan=False, sort_keys=False)


def test_check_json_takes_what_json_dumps_takes() -> None:
    class Text(str):
        pass

    value = {"a": [1, 2.5, True, None, Text("x"), (1, 2), 10 ** 100], "b": {"c": "d"}}
    protocol.check_json(value)
    circular: list = []
    circular.append(circular)
    with pytest.raises(RecursionError):
        protocol.check_json(circular)


# a hook's return with something the frames must not carry, and what the pipeline reports
@pytest.mark.parametrize("body", [
    'code["nan.txt"] = float("nan")\nreturn code',
    'code["inf.txt"] = [float("inf")]\nreturn code',
    'code["big.txt"] = 10 ** 5000\nreturn code',
    'code["set.txt"] = {1, 2}\nreturn code',
    'import datetime\ncode["date.txt"] = datetime.date.today()\nreturn code',
    'code["bytes.txt"] = b"x"\nreturn code',
    'code[1] = "int key"\nreturn code',
    'code["s.txt"] = "\\ud800"\nreturn code',
    'return {"x-nan": float("nan")}',
])
def test_a_return_the_frames_cannot_carry_is_invalid_output(plugin_site, needs, closing,
                                                           body) -> None:
    snap, names = sandboxed(plugin_site, {"bad": hook(body), "witness": WITNESS})
    closing(snap)
    result = run_generation(needs, snap)
    assert statuses(result) == {names["bad"]: "invalid-output", names["witness"]: "ok"}
    assert result.files["witness.txt"] == "still here"
    # the worker lives on: it refused to send, it did not break the protocol
    assert names["bad"] in snap.sandbox.running()


def test_big_integers_cross_as_before(plugin_site, needs, closing) -> None:
    before = hook('needs["x-big"] = [10 ** 30, -(2 ** 70)]\nreturn needs', "before_generation")
    after = hook('code["big.txt"] = str(needs["x-big"])\nreturn code')
    snap, _ = sandboxed(plugin_site, {"a": before, "b": after})
    closing(snap)
    result = run_generation(needs, snap)
    assert set(statuses(result).values()) == {"ok"}
    assert result.files["big.txt"] == str([10 ** 30, -(2 ** 70)])


def test_nested_changes_made_in_place_cross_back(plugin_site, needs, closing) -> None:
    """The worker answers with the top-level keys that changed; a change deep inside a
    key's value, made in place, is one."""
    before = hook('needs["entities"][0]["name"] = "Product"\n'
                  'needs["entities"][0]["fields"].append({"name": "sku", "type": "string"})\n'
                  'return needs', "before_generation")
    snap, names = sandboxed(plugin_site, {"rename": before})
    closing(snap)
    result = run_generation(needs, snap)
    assert statuses(result) == {names["rename"]: "ok"}
    assert any("product" in path for path in result.files), sorted(result.files)
    assert any("sku" in text for text in result.files.values())


FORGE = ("#!full\nimport os, stat, struct\n"
         "def _is_pipe(fd):\n    try:\n        return stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
         "    except OSError:\n        return False\n")


@pytest.mark.parametrize("frame", [
    b'{"id": 1, "ok": true, "value": NaN}',
    b'{"id": 1, "ok": true, "changes": {"set": {"a.txt": 1e999}, "removed": []}}',
    b'{"id": 1, "ok": true, "value": ' + b"1" * 4400 + b"}",
    b'{"id": 1, "ok": true, "value": "\xff"}',
    b"[1]",
])
def test_a_forged_malformed_frame_is_the_plugins_failure(plugin_site, needs, closing,
                                                         frame) -> None:
    forge = hook("import os, struct\n"
                 "out = [fd for fd in range(3, 64) if _is_pipe(fd)][-1]\n"
                 f"body = {frame!r}\n"
                 "os.write(out, struct.pack('>I', len(body)) + body)\n"
                 "import time\ntime.sleep(5)\nreturn code")
    from support.wheels import plugin_source

    snap, names = sandboxed(plugin_site, {"forger": FORGE + plugin_source("NAME", body=forge),
                                          "witness": WITNESS})
    closing(snap)
    result = run_generation(needs, snap)
    report = {h.name: h for h in result.plugins}
    assert report[names["forger"]].status == "failed"
    assert report[names["forger"]].violation, "a broken frame is a sandbox violation"
    assert result.files["witness.txt"] == "still here"
