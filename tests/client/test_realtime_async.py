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



async def test_how_a_session_ended_is_told_apart(server):
    """Iteration ends however the session does; `failure` says whether it failed. A voice agent
    must tell the server ending a session for an error (or crashing) from its own close."""
    async with await open_realtime(server.url, server.avatar) as rt:
        await rt.ws.send('{"type": "no-such-message"}')  # the server ends the session: 4400
        events = [item async for item in rt if isinstance(item, dict)]
    assert events[-1]["type"] == "error" and events[-1]["code"] == "invalid_input"
    assert isinstance(rt.failure, ClientError)
    assert (rt.failure.status, rt.failure.code) == (4400, "invalid_input") and "no-such-message" in rt.failure.detail

    async with await open_realtime(server.url, server.avatar) as rt:
        await asyncio.wait_for(rt.receive(), RECV_S)  # an idle frame
        await rt.close()
        assert [item async for item in rt] == [] and rt.failure is None


def test_the_sync_session_says_how_it_ended_too(server):
    from musetalk_client import Client

    with Client(server.url) as client, client.realtime(server.avatar) as rt:
        rt.ws.send(b"\x00")  # odd-length PCM16: 4400
        for _item in rt:
            pass
    assert isinstance(rt.failure, ClientError) and (rt.failure.status, rt.failure.code) == (4400, "invalid_input")
