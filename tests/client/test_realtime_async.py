"""The asyncio session (`open_realtime`), against a real lite server on loopback: the same reader
as the sync session, so the checks here are what only the async path does (its own sends and
receives, the refusal's close code; an HTTP status on the upgrade is in clients/python/tests)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from musetalk_client import ClientError, RealtimeFrame, open_realtime

RATE = 24000
RECV_S = 5.0


async def test_an_utterance_comes_back_as_frames_with_its_own_audio(server):
    pcm = (np.sin(np.arange(RATE) * 2 * np.pi * 220 / RATE) * 8000).astype("<i2").tobytes()  # 1 s
    spoken = bytearray()
    async with await open_realtime(server.url, server.avatar, sample_rate=RATE) as rt:
        assert rt.ready["sample_rate"] == rt.sample_rate == RATE
        for start in range(0, len(pcm), 960):  # 20 ms chunks, faster than real time
            await rt.send_audio(pcm[start:start + 960])
        await rt.end()
        while True:
            item = await asyncio.wait_for(rt.receive(), RECV_S)
            if isinstance(item, RealtimeFrame) and item.speaking:
                spoken += item.audio
            elif isinstance(item, dict) and item["type"] == "speech_ended":
                break
    assert item["reason"] == "end"
    per_frame = 2 * RATE // server.fps
    assert bytes(spoken) == pcm + bytes(-len(pcm) % per_frame)  # exactly what was sent, padded to a frame


async def test_a_refusal_is_a_client_error_with_the_close_code(server):
    with pytest.raises(ClientError) as e:
        await open_realtime(server.url, "no-such-avatar")
    assert (e.value.status, e.value.code) == (4404, "avatar_not_found")

