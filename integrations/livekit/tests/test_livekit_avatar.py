"""AvatarSession in a real AgentSession, through LiveKit's own AvatarRunner, QueueAudioOutput,
AVSynchronizer, audio and video sources, against a real server on loopback. Only the room is a
stand-in (offline_room.py): joining a room and publishing through a LiveKit server cannot run here."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.avatar import QueueAudioOutput
from lk_media import audio_frames, speech_pcm
from musetalk_livekit import AvatarSession
from offline_room import OfflineRoom

from musetalk_client import ClientError

RATE = 24_000
PLAYOUT_TIMEOUT_S = 10.0


async def started_avatar(server) -> tuple[AvatarSession, AgentSession, OfflineRoom]:
    room, agent = OfflineRoom(), AgentSession()
    avatar = AvatarSession(avatar_id=server.avatar_id, url=server.url, sample_rate=RATE)
    await avatar.start(agent, room)
    return avatar, agent, room


async def test_the_agent_speaks_through_the_avatar_and_hears_when_playback_starts_and_ends(musetalk_server):
    avatar, agent, room = await started_avatar(musetalk_server)
    audio = agent.output.audio
    assert isinstance(audio, QueueAudioOutput) and audio.sample_rate == RATE
    events: list[str] = []  # listening before the runner has forwarded anything (no await since start)
    audio.on("playback_started", lambda _: events.append("started"))
    try:
        # 1. Idle video from the first moment: the base class's wait for the avatar's video track ends.
        await avatar.wait_for_join(timeout=5.0)
        assert len(room.published(rtc.TrackKind.KIND_VIDEO)) == 1
        assert len(room.published(rtc.TrackKind.KIND_AUDIO)) == 1
        assert avatar.avatar_identity == room.local_participant.identity  # in-process: the agent itself
        await asyncio.sleep(0.5)
        assert events == []  # idle frames went through the runner all along: no playback began

        # 2. A reply of 1 s: playback starts with the avatar's first speaking frame, and finishes
        #    when the runner reads the AudioSegmentEnd after the last one.
        for frame in audio_frames(speech_pcm(1.0, RATE), RATE):
            await audio.capture_frame(frame)
        audio.flush()
        finished = await asyncio.wait_for(audio.wait_for_playout(), PLAYOUT_TIMEOUT_S)
        assert events == ["started"]
        assert not finished.interrupted
        assert finished.playback_position == pytest.approx(1.0)  # 25 speaking frames of 40 ms

        # 3. A reply cut short: clear_buffer reaches the server, and the runner reports the interruption.
        for frame in audio_frames(speech_pcm(4.0, RATE), RATE):
            await audio.capture_frame(frame)
        while events.count("started") < 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        audio.clear_buffer()
        interrupted = await asyncio.wait_for(audio.wait_for_playout(), PLAYOUT_TIMEOUT_S)
        assert interrupted.interrupted
        assert 0.2 < interrupted.playback_position < 2.0
    finally:
        await avatar.aclose()


@pytest.mark.parametrize("own_server", [{"max_realtime_streams": "1"}], indirect=True)
async def test_a_refusal_and_a_killed_server_each_raise_a_clear_error(own_server, caplog):
    """One server for both, since each start costs seconds: full (MUSETALK_MAX_REALTIME_STREAMS = 1),
    then killed under the avatar that filled it."""
    holder, _, _ = await started_avatar(own_server)
    try:
        agent = AgentSession()
        with pytest.raises(ClientError) as refused:
            await AvatarSession(avatar_id=own_server.avatar_id, url=own_server.url).start(agent, OfflineRoom())
        assert (refused.value.status, refused.value.code) == (4429, "busy")
        assert "MUSETALK_MAX_REALTIME_STREAMS" in refused.value.detail
        assert agent.output.audio is None  # the agent's own audio output is left as it was

        assert holder.runner is not None
        await holder.wait_for_join(timeout=5.0)
        own_server.kill()
        with pytest.raises(ClientError) as lost:
            await asyncio.wait_for(holder.runner.wait_for_complete(), 2.0)
        assert (lost.value.status, lost.value.code) == (1006, "session_lost")
        assert "Error in _forward_video" in caplog.text  # the runner logs it, with the reason
    finally:
        await holder.aclose()
