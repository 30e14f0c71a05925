"""The client reads the real-time frames the server writes: musetalk_client has its own reader of
the format (it must not import the server), so the two are checked against each other here."""

from __future__ import annotations

import pytest

from musetalk_client import LAST, SPEAKING, UNDERRUN, RealtimeFrame, unpack_frame
from musetalk_server.render.realtime import protocol


def test_the_flag_bits_agree():
    assert (SPEAKING, LAST, UNDERRUN) == (protocol.SPEAKING, protocol.LAST, protocol.UNDERRUN)


@pytest.mark.parametrize("flags", [0, protocol.SPEAKING, protocol.SPEAKING | protocol.LAST,
                                   protocol.SPEAKING | protocol.UNDERRUN])
def test_a_server_frame_reads_back(flags):
    jpeg, audio = b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9", bytes(1280)
    message = protocol.pack_frame(41, 1640, 3, flags, jpeg, audio)
    frame = RealtimeFrame(*unpack_frame(message), 16000)
    assert (frame.header.index, frame.header.pts_ms, frame.header.utterance, frame.header.flags) == (41, 1640, 3, flags)
    assert (frame.jpeg, frame.audio) == (jpeg, audio)
    assert (frame.speaking, frame.last, frame.underrun) == (bool(flags & SPEAKING), bool(flags & LAST),
                                                            bool(flags & UNDERRUN))
