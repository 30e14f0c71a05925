"""The wire format of `WS /inference/realtime/{avatar_id}` (docs/realtime.md).

Server to client, one binary message per output frame:
    24-byte little-endian header `<4sIIIHHI`: magic b"MTF1", frame index, pts ms, utterance,
    flags, reserved (0), JPEG length; then the JPEG; then the frame's PCM16 audio.
Client to server: PCM16 little-endian mono as binary messages, and JSON text messages
`config`, `end`, `interrupt`, `ping`, each with exactly its own keys. The rate can also be set
before the first frame, with the socket's `sample_rate` query parameter.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidInput, MuseTalkError

__all__ = [
    "DEFAULT_RATE",
    "HEADER",
    "HEADER_BYTES",
    "LAST",
    "MAGIC",
    "MAX_RATE",
    "MIN_RATE",
    "SPEAKING",
    "UNDERRUN",
    "Control",
    "FrameHeader",
    "check_pcm",
    "check_rate",
    "close_code",
    "error_event",
    "pack_frame",
    "parse_text",
    "rate_from_query",
    "unpack_frame",
]

MAGIC = b"MTF1"
HEADER = struct.Struct("<4sIIIHHI")
HEADER_BYTES = HEADER.size  # 24
# Flag bits.
SPEAKING = 1  # the frame belongs to an utterance
LAST = 2  # the last frame of its utterance (ended by `end`)
UNDERRUN = 4  # the utterance's audio ran short: closed mouth and zeros
MIN_RATE, MAX_RATE, DEFAULT_RATE = 8_000, 48_000, 16_000
PCM_BYTES = 2  # PCM16
# Each client message type and the keys it may carry: any other key (a misspelt `samplerate`)
# is refused rather than ignored, so a client never believes a setting took that did not.
MESSAGE_KEYS = {"config": ("type", "sample_rate"), "end": ("type",), "interrupt": ("type",), "ping": ("type",)}


@dataclass(frozen=True)
class FrameHeader:
    index: int
    pts_ms: int
    utterance: int
    flags: int
    jpeg_bytes: int


def pack_frame(index: int, pts_ms: int, utterance: int, flags: int, jpeg: bytes, audio: bytes) -> bytes:
    """One frame message: header, JPEG, then the frame's share of the audio."""
    return HEADER.pack(MAGIC, index, pts_ms, utterance, flags, 0, len(jpeg)) + jpeg + audio


def unpack_frame(message: bytes) -> tuple[FrameHeader, bytes, bytes]:
    """(header, JPEG, PCM16 audio) of one frame message; for clients and tests."""
    magic, index, pts, utterance, flags, _reserved, n = HEADER.unpack_from(message)
    if magic != MAGIC:
        raise ValueError(f"not a frame message: magic {magic!r}")
    jpeg = message[HEADER_BYTES:HEADER_BYTES + n]
    return FrameHeader(index, pts, utterance, flags, n), jpeg, message[HEADER_BYTES + n:]


@dataclass(frozen=True)
class Control:
    type: str
    sample_rate: int | None = None


def parse_text(text: str) -> Control:
    """A client text message; InvalidInput (close 4400) for bad JSON, an unknown type or key, or a bad rate."""
    try:
        body = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"text messages are JSON: {e}") from e
    kind = body.get("type") if isinstance(body, dict) else None
    if kind not in MESSAGE_KEYS:
        raise InvalidInput(f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_KEYS)}")
    unknown = [key for key in body if key not in MESSAGE_KEYS[kind]]
    if unknown:
        raise InvalidInput(f"unknown {'keys' if len(unknown) > 1 else 'key'} {', '.join(map(repr, unknown))} "
                           f"in the {kind!r} message; it takes {', '.join(MESSAGE_KEYS[kind])}")
    if kind != "config":
        return Control(kind)
    return Control(kind, check_rate(body.get("sample_rate", DEFAULT_RATE)))


def check_rate(rate: object, source: str = "sample_rate") -> int:
    """The client's audio rate if it is one the session takes: an integer from MIN_RATE to MAX_RATE."""
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidInput(f"{source} must be an integer from {MIN_RATE} to {MAX_RATE}, got {rate!r}")
    return rate


def rate_from_query(value: str | None) -> int:
    """The `sample_rate` query parameter of the socket's URL (DEFAULT_RATE without one), checked as `config` is."""
    if value is None:
        return DEFAULT_RATE
    # Plain decimal digits only: int() would also take " 48000", "+48000" and "48_000".
    rate: object = int(value) if value.isascii() and value.isdigit() else value
    return check_rate(rate, "the sample_rate query parameter")


def check_pcm(data: bytes) -> None:
    if len(data) % PCM_BYTES:
        raise InvalidInput(f"PCM16 audio must have an even number of bytes, got {len(data)}")


# Close codes: 4000 + the HTTP status for the ones a client acts on, 4400 for any other
# client error, 1011 for ours.
_CLOSE_BY_STATUS = {401: 4401, 404: 4404, 408: 4408, 429: 4429}
CLIENT_ERROR, INTERNAL_ERROR = 4400, 1011


def close_code(error: MuseTalkError) -> int:
    if error.status in _CLOSE_BY_STATUS:
        return _CLOSE_BY_STATUS[error.status]
    return CLIENT_ERROR if 400 <= error.status < 500 else INTERNAL_ERROR


def error_event(error: MuseTalkError) -> dict[str, Any]:
    """The `error` event: the HTTP error body's code and detail, with its type."""
    return {"type": "error", "code": error.code, "detail": error.detail}
