"""The frames between the backend and a sandbox worker: 4-byte big-endian length + JSON.

Both sides cap the frame size; the parent treats every frame as untrusted data (it is
parsed as JSON, never unpickled, and its content is validated like any hook result).
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any, Final

from dihya.reasons import FixedReasonError

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(FixedReasonError):
    """A frame was malformed, oversized or cut short."""

    REASON = "protocol-error"


class FrameTimeout(FixedReasonError):
    """No complete frame arrived before the deadline."""

    REASON = "frame-timeout"


# What `json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`
# uses, built once. The fast one skips the circular-reference bookkeeping (≈ 12 % of an
# encode); its output is identical. Circular data sends it into RecursionError, and the
# checking encoder then raises what `json.dumps` raises (ValueError, or RecursionError for
# data that is merely too deep).
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_FAST_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                        allow_nan=False, check_circular=False)


def _dumps(message: dict[str, Any]) -> str:
    try:
        return _FAST_ENCODER.encode(message)
    except RecursionError:
        return _ENCODER.encode(message)


def encode(message: dict[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    body = _dumps(message).encode("utf-8")
    if len(body) > max_bytes:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the limit of {max_bytes}")
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> None:
    data = memoryview(encode(message, max_bytes))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_frame(fd: int, deadline: float | None = None,
               max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Read one frame from `fd`; `deadline` is a `time.monotonic()` value or None."""
    header = _read_exactly(fd, _HEADER.size, deadline)
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes announced, the limit is {max_bytes}")
    body = _read_exactly(fd, length, deadline)
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    except RecursionError as exc:  # `[[[[...` from a hostile worker: never the caller's crash
        raise ProtocolError("frame is nested too deeply") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
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
