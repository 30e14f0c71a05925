"""AvatarSession in a real AgentSession, through LiveKit's own AvatarRunner, QueueAudioOutput,
AVSynchronizer, audio and video sources, against a real server on loopback. Only the room is a
stand-in (offline_room.py): joining a room and publishing through a LiveKit server cannot run here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.avatar import QueueAudioOutput
from lk_media import audio_frames, speech_pcm
from musetalk_livekit import AvatarSession
from offline_room import OfflineRoom

from musetalk_client import ClientError

RATE = 24_000
PLAYOUT_TIMEOUT_S = 10.0
KILL_AFTER_S = 0.5
IDLE_TIMEOUT_S = 1.0  # the fallback test's server closes a session silent this long
HEARD_WITHIN_S = 1.0  # the runner reports playback finished as its audio source takes the last frame


async def started_avatar(server, **options) -> tuple[AvatarSession, AgentSession, OfflineRoom]:
    room, agent = OfflineRoom(), AgentSession()
    avatar = AvatarSession(avatar_id=server.avatar_id, url=server.url, sample_rate=RATE, **options)
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
    """One server for all three, since each start costs seconds: full (MUSETALK_MAX_REALTIME_STREAMS = 1),
    then killed under the avatar that filled it, which was told not to fall back to audio only, then
    gone when the next avatar starts."""
    holder, _, _ = await started_avatar(own_server, audio_passthrough_on_error=False)
    try:
        agent = AgentSession()
        with pytest.raises(ClientError) as refused:
            await AvatarSession(avatar_id=own_server.avatar_id, url=own_server.url).start(agent, OfflineRoom())
        assert (refused.value.status, refused.value.code) == (4429, "busy")
        # The detail names the cap, or (on a machine busy enough that the holder runs late) the
        # lateness: either way the scheduler's own reason, with its retry time.
        assert "retry in" in refused.value.detail
        assert agent.output.audio is None  # the agent's own audio output is left as it was

        assert holder.runner is not None
        await holder.wait_for_join(timeout=5.0)
        own_server.kill()
        with pytest.raises(ClientError) as lost:
            await asyncio.wait_for(holder.runner.wait_for_complete(), 2.0)
        assert (lost.value.status, lost.value.code) == (1006, "session_lost")
        assert "Error in _forward_video" in caplog.text  # the runner logs it, with the reason
        # Nothing listens there now: the connection's own error, the output again left alone.
        agent = AgentSession()
        with pytest.raises(OSError):
            await AvatarSession(avatar_id=own_server.avatar_id, url=own_server.url).start(agent, OfflineRoom())
        assert agent.output.audio is None
    finally:
        await holder.aclose()


async def tts(pcm: bytes) -> AsyncIterator[rtc.AudioFrame]:
    """A reply's audio, as `AgentSession.say(audio=...)` takes a TTS's."""
    for frame in audio_frames(pcm, RATE):
        yield frame


async def listen(stream: rtc.AudioStream, heard: bytearray) -> None:
    async for event in stream:
        heard.extend(bytes(event.frame.data))


async def heard_in_full(heard: bytearray, pcm: bytes) -> None:
    while pcm not in heard:
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("own_server", [{"realtime_idle_timeout_s": str(IDLE_TIMEOUT_S)}], indirect=True)
async def test_after_the_server_dies_mid_reply_the_agent_speaks_on_without_video(own_server, caplog):
    """The default (audio passthrough): a running AgentSession speaks through the avatar, and the
    server is killed during a reply. That reply plays to its end without video, the next reply's audio
    reaches the avatar's audio track sample for sample, and the call goes on. Before it, on the same
    server (each start costs seconds): the avatar's pings keep a silent agent's session open."""
    cut_reply, next_reply = speech_pcm(3.0, RATE), speech_pcm(1.0, RATE, from_s=10.0)
    avatar, agent, room = await started_avatar(own_server, keepalive_s=IDLE_TIMEOUT_S / 3)
    await avatar.wait_for_join(timeout=5.0)  # the tracks are published
    # What the avatar's audio track carries, read back through LiveKit's own AudioStream.
    track = room.published(rtc.TrackKind.KIND_AUDIO)[0].track
    stream = rtc.AudioStream.from_track(track=track, sample_rate=RATE, num_channels=1)
    heard = bytearray()
    listening = asyncio.create_task(listen(stream, heard))
    closed: list[object] = []
    agent.on("close", closed.append)
    try:
        await agent.start(agent=Agent(instructions="Say what you are given."))
        audio = agent.output.audio
        assert audio is avatar.audio_output and avatar.generator is not None
        started, finished = asyncio.Event(), []
        audio.on("playback_started", lambda _: started.set())
        audio.on("playback_finished", finished.append)

        # 0. Silent for longer than the server's idle timeout: the pings keep the session.
        await asyncio.sleep(1.5 * IDLE_TIMEOUT_S)
        assert avatar.generator.lost is None
        # 1. The server dies 0.5 s into a 3 s reply: the rest of it is still said, as audio only.
        first = agent.say("the cut reply", audio=tts(cut_reply))
        await asyncio.wait_for(started.wait(), PLAYOUT_TIMEOUT_S)
        await asyncio.sleep(KILL_AFTER_S)
        own_server.kill()
        await asyncio.wait_for(first.wait_for_playout(), PLAYOUT_TIMEOUT_S)
        assert avatar.generator.lost is not None and avatar.generator.lost.code == "session_lost"
        # 2. The next reply, after the loss: its audio, unchanged, on the same track.
        second = agent.say("the next reply", audio=tts(next_reply))
        await asyncio.wait_for(second.wait_for_playout(), PLAYOUT_TIMEOUT_S)
        await asyncio.wait_for(heard_in_full(heard, next_reply), HEARD_WITHIN_S)
        assert closed == []  # the call did not end with the avatar
    finally:
        await stream.aclose()
        await listening
        await agent.aclose()
        await avatar.aclose()
    assert not first.interrupted and not second.interrupted
    assert [(f.interrupted, round(f.playback_position, 1)) for f in finished] == [(False, 3.0), (False, 1.0)]
    # The cut reply's last 2 s, said after the kill (the silence the loss left comes before them).
    assert cut_reply[-2 * 2 * RATE:] in heard
    # One clear error, from the plugin, and nothing from the runner: its tasks went on.
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.name for r in errors] == ["musetalk_livekit.generator"], [r.getMessage() for r in errors]
    assert "session_lost" in errors[0].getMessage() and "without video" in errors[0].getMessage()
