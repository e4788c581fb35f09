"""The frames between the backend and a sandbox worker: 4-byte big-endian length + JSON.

Both sides cap the frame size; the parent treats every frame as untrusted data (it is
parsed as strict JSON by msgspec, never unpickled, and its content is validated like any
hook result). A message is a JSON object; a side ignores the keys it does not know, so
either can add some (a request id, log records next to a hook's answer) without breaking
the other.
"""

from __future__ import annotations

import math
import os
import select
import struct
import time
from typing import Any, Final

import msgspec

from dihya.reasons import FixedReasonError

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(FixedReasonError):
    """A frame was malformed, oversized or cut short."""

    REASON = "protocol-error"


class FrameTimeout(FixedReasonError):
    """No complete frame arrived before the deadline."""

    REASON = "frame-timeout"


# msgspec's JSON codec: one C pass each way instead of the standard library's encoder and
# decoder (≈ 10x faster on a 10 KB frame). The decoder is strict JSON: no NaN or Infinity
# literals, no number out of a float's range, no integer over Python's 4300-digit limit,
# valid UTF-8 only, and an object at the top level. The encoder is lenient (NaN becomes
# null, a set a list, a date a string...): what the worker sends of a plugin's making goes
# through `check_json` first, so nothing the standard encoder refused is sent.
_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_INT_LIMIT: Final = 2 ** 64


def encode(message: dict[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The frame of `message`: its length (4 bytes, big-endian), then its JSON."""
    frame = bytearray(_HEADER.size)
    _ENCODER.encode_into(message, frame, _HEADER.size)
    length = len(frame) - _HEADER.size
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    _HEADER.pack_into(frame, 0, length)
    return bytes(frame)


def encode_value(value: Any) -> bytes:
    """The JSON of `value` as `encode` writes it in a frame (embed it with `msgspec.Raw`)."""
    return _ENCODER.encode(value)


def check_json(value: Any) -> None:
    """Raise `TypeError` or `ValueError` unless `value` is JSON data as `json.dumps` with
    `allow_nan=False` takes it: dicts with string keys, lists and tuples, str, int (within
    the 4300-digit limit), finite float, bool, None, subclasses of these included. Deeply
    nested or circular data raises `RecursionError`."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is dict or isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            check_json(item)
    elif kind is list or isinstance(value, list | tuple):
        for item in value:
            check_json(item)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"out of range float value is not JSON compliant: {value!r}")
    elif isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            int.__repr__(value)  # ValueError past the digit limit, as json.dumps
    elif not isinstance(value, str):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_frame(fd: int, message: dict[str, Any], max_bytes: int = MAX_FRAME_BYTES,
                deadline: float | None = None) -> None:
    """Write one frame to `fd`; `deadline` is a `time.monotonic()` value or None.

    With a deadline, `fd` must be non-blocking (`os.set_blocking(fd, False)`): the other
    side may stop reading at any time (a hostile worker can leave its requests unread, even
    shrink its pipe to one page), and `FrameTimeout` is raised when the frame is not all
    written by then. Without one, a blocking `fd` is written in full, as before.
    """
    data = memoryview(encode(message, max_bytes))
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        data = data[written:]
        if data:  # wait until the other side read some (never past the deadline)
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not select.select([], [fd], [], left)[1]:
                raise FrameTimeout("the other side did not read the frame before the deadline")


def read_frame(fd: int, deadline: float | None = None,
               max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Read one frame from `fd`; `deadline` is a `time.monotonic()` value or None."""
    header = _read_exactly(fd, _HEADER.size, deadline)
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes announced, the limit is {max_bytes}")
    body = _read_exactly(fd, length, deadline)
    return decode(body)


def decode(body: bytes) -> dict[str, Any]:
    """The message of a frame's body; `ProtocolError` unless it is a strict JSON object."""
    try:
        message: dict[str, Any] = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        if str(exc).startswith("Expected `object`"):
            raise ProtocolError("frame is not a JSON object") from exc
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    except ValueError as exc:  # msgspec.DecodeError, UnicodeDecodeError
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    except RecursionError as exc:  # `[[[[...` from a hostile worker: never the caller's crash
        raise ProtocolError("frame is nested too deeply") from exc
    return message


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameTimeout("no answer before the deadline")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise FrameTimeout("no answer before the deadline")
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            raise ProtocolError("the other side closed the stream")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
