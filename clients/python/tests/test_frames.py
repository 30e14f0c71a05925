"""The real-time frame message format, built here byte by byte from its documented layout."""

from __future__ import annotations

import struct

import pytest

from musetalk_client import LAST, SPEAKING, UNDERRUN, RealtimeFrame, unpack_frame


def message(flags: int) -> bytes:
    jpeg, audio = b"\xff\xd8jpeg\xff\xd9", b"\x01\x00\x02\x00"
    return struct.pack("<4sIIIHHI", b"MTF1", 7, 280, 2, flags, 0, len(jpeg)) + jpeg + audio


def test_header_jpeg_and_audio() -> None:
    header, jpeg, audio = unpack_frame(message(SPEAKING | LAST))
    assert (header.index, header.pts_ms, header.utterance, header.flags, header.jpeg_bytes) == (7, 280, 2, 3, 8)
    assert (jpeg, audio) == (b"\xff\xd8jpeg\xff\xd9", b"\x01\x00\x02\x00")


@pytest.mark.parametrize(("flags", "expected"), [(0, (False, False, False)), (SPEAKING, (True, False, False)),
                                                 (SPEAKING | LAST, (True, True, False)),
                                                 (SPEAKING | UNDERRUN, (True, False, True))])
def test_flags(flags: int, expected: tuple[bool, bool, bool]) -> None:
    frame = RealtimeFrame(*unpack_frame(message(flags)), 16000)
    assert (frame.speaking, frame.last, frame.underrun) == expected


def test_a_message_that_is_not_a_frame() -> None:
    with pytest.raises(ValueError, match="magic"):
        unpack_frame(b"JSON" + bytes(20))
