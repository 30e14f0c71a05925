"""MuseTalkVideoGenerator against a real server on loopback (lite engine), with LiveKit's own `rtc`
frame types: what AvatarRunner would read from it, item by item."""

from __future__ import annotations

import asyncio
import re
import time

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd
from lk_media import Tap, audio_frames, audios, kinds, segment_end, speech_pcm, take, videos
from musetalk_livekit import MuseTalkVideoGenerator

from musetalk_client import open_realtime

RATE = 24_000  # the usual TTS rate; the session is opened at it
FPS = 25
SHARE = RATE // FPS  # samples per frame: 960
LAG_S = 0.2


async def generator(server, rate: int = RATE) -> MuseTalkVideoGenerator:
    return MuseTalkVideoGenerator(await open_realtime(server.url, server.avatar_id, sample_rate=rate))


async def test_idle_frames_are_video_only_from_the_first_frame(musetalk_server):
    gen = await generator(musetalk_server)
    try:
        started = time.monotonic()
        items = await take(aiter(gen), videos(10))
        elapsed = time.monotonic() - started
    finally:
        await gen.aclose()
    assert kinds(items) == "V" * 10  # no audio while idle: the runner would report playback at once
    assert {(f.width, f.height, f.type) for f in items} == {(gen.width, gen.height, rtc.VideoBufferType.RGBA)}
    assert len(items[0].data) == 4 * gen.width * gen.height
    assert elapsed < 10 / FPS + 1.0  # idle video is paced by the server's clock, not held back


async def test_an_utterance_yields_its_audio_with_its_frames_then_segment_end(musetalk_server):
    pcm = speech_pcm(1.0, RATE)
    gen = await generator(musetalk_server)
    stream = aiter(gen)
    try:
        await take(stream, videos(3))
        for frame in audio_frames(pcm, RATE):
            await gen.push_audio(frame)
        await gen.push_audio(AudioSegmentEnd())
        items = await take(stream, segment_end)
        items += await take(stream, videos(5))  # and idle again after it
    finally:
        await gen.aclose()
    order = kinds(items)
    # Idle frames (V), then each speaking frame as its picture and its audio (VA), the last one
    # followed by the segment end, then idle video again without audio.
    assert re.fullmatch(r"V*(VA)+EV{5}", order), order
    spoken = [i for i in items if isinstance(i, rtc.AudioFrame)]
    assert all(f.sample_rate == RATE and f.num_channels == 1 and f.samples_per_channel == SHARE for f in spoken)
    # The speaking frames give back exactly the PCM that went in, zero-padded to the frame boundary.
    assert len(spoken) == -(-len(pcm) // (2 * SHARE))
    assert b"".join(bytes(f.data) for f in spoken) == pcm + bytes(2 * SHARE * len(spoken) - len(pcm))


async def test_audio_at_another_rate_is_resampled_to_the_session_rate(musetalk_server):
    pcm16k = speech_pcm(0.8, 16_000)  # a 16 kHz TTS into the 24 kHz session
    gen = await generator(musetalk_server)
    stream = aiter(gen)
    try:
        for frame in audio_frames(pcm16k, 16_000):
            await gen.push_audio(frame)
        await gen.push_audio(AudioSegmentEnd())
        items = await take(stream, segment_end)
    finally:
        await gen.aclose()
    spoken = [i for i in items if isinstance(i, rtc.AudioFrame)]
    assert all(f.sample_rate == RATE for f in spoken)
    # 0.8 s at 24 kHz is 19 200 samples, 20 frames; the resampler's flush at the end gives it all back.
    assert len(spoken) == 20


async def test_clear_buffer_mid_utterance_returns_to_idle_and_the_next_reply_plays(musetalk_server):
    tap = Tap(await open_realtime(musetalk_server.url, musetalk_server.avatar_id, sample_rate=RATE))
    gen = MuseTalkVideoGenerator(tap)
    stream = aiter(gen)
    try:
        for frame in audio_frames(speech_pcm(4.0, RATE), RATE):  # a long reply, sent in a burst
            await gen.push_audio(frame)
        before = await take(stream, audios(5))
        # A runner behind the clock (its synchronizer full) leaves frames waiting in the socket:
        # when the interrupt goes out, some already-sent speaking frames are still to be read.
        await asyncio.sleep(LAG_S)
        cleared_at = len(tap.headers)
        await gen.clear_buffer()
        after = await take(stream, videos(15))
        after_headers = tap.headers[cleared_at:]
        for frame in audio_frames(speech_pcm(0.4, RATE), RATE):  # the next reply
            await gen.push_audio(frame)
        await gen.push_audio(AudioSegmentEnd())
        reply = await take(stream, segment_end)
    finally:
        await gen.aclose()
    # Frames of the cancelled reply still on the wire show without audio and without a segment end:
    # the runner reports the interrupted playback itself, and audio now would start a playback
    # nobody asked for.
    assert kinds(before).count("E") == 0 and kinds(after) == "V" * len(after)
    # The server stops speaking within a few frames: the lagging ones, then those decided or in
    # flight when the interrupt came; idle from then on.
    speaking_after = [h for h in after_headers if h.utterance != 0]
    assert speaking_after == after_headers[:len(speaking_after)], after_headers
    assert 1 <= len(speaking_after) <= LAG_S * FPS + 4 and {h.utterance for h in speaking_after} == {1}
    assert re.fullmatch(r"V*(VA){10}E", kinds(reply)), kinds(reply)  # 0.4 s: 10 frames, all with audio
    assert {h.utterance for h in tap.headers[-10:]} == {2}


async def test_push_audio_waits_while_too_much_is_unspoken(musetalk_server):
    pcm = speech_pcm(1.2, RATE)
    gen = MuseTalkVideoGenerator(await open_realtime(musetalk_server.url, musetalk_server.avatar_id,
                                                     sample_rate=RATE), max_ahead_s=0.4)
    stream = aiter(gen)

    async def tts() -> float:
        started = time.monotonic()
        for frame in audio_frames(pcm, RATE):  # as fast as the generator takes it
            await gen.push_audio(frame)
        await gen.push_audio(AudioSegmentEnd())
        return time.monotonic() - started

    try:
        pushing = asyncio.create_task(tts())
        items = await take(stream, segment_end)
        pushed_in = await pushing
    finally:
        await gen.aclose()
    # The last chunk could only go once 0.8 s had been spoken, on the server's 25 fps clock.
    assert pushed_in >= 0.8 - 2 / FPS
    spoken = b"".join(bytes(i.data) for i in items if isinstance(i, rtc.AudioFrame))
    assert spoken[:len(pcm)] == pcm and not any(spoken[len(pcm):])  # nothing lost on the way


def pcm_of(items) -> bytes:
    return b"".join(bytes(i.data) for i in items if isinstance(i, rtc.AudioFrame))


async def test_a_lost_session_goes_on_as_audio_only_from_where_the_avatar_stopped(musetalk_server, caplog):
    """The network drops mid-reply (the socket aborted: no close frame). What the avatar had not said
    yet comes out as audio without video and the reply ends; later replies pass through whole, and an
    interruption still drops what is queued."""
    cut_reply, next_reply = speech_pcm(2.0, RATE), speech_pcm(0.6, RATE)
    gen = await generator(musetalk_server)
    stream = aiter(gen)

    async def say(pcm: bytes, end: bool = True) -> None:
        for frame in audio_frames(pcm, RATE):
            await gen.push_audio(frame)
        if end:
            await gen.push_audio(AudioSegmentEnd())

    try:
        await say(cut_reply)
        said = await take(stream, audios(10))  # 0.4 s of the 2 s, lip-synced
        gen.session.ws.transport.abort()
        said += await take(stream, segment_end)
        await say(next_reply)
        passed = await take(stream, segment_end)
        await say(cut_reply, end=False)
        await take(stream, audios(3))
        await gen.clear_buffer()
        await say(next_reply)
        after_clear = await take(stream, segment_end)
    finally:
        await gen.aclose()
    assert gen.lost is not None and (gen.lost.status, gen.lost.code) == (1006, "session_lost")
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "1006 session_lost" in errors[0].getMessage()
    # The cut reply: its frames with audio while the session lasted (those already on the wire
    # included), then the rest of it as audio only, exactly what was sent, no sample lost or repeated.
    assert re.fullmatch(r"V*(VA)+A+E", kinds(said)), kinds(said)
    assert pcm_of(said) == cut_reply
    # The next reply, and the one after an interruption: the TTS audio unchanged, at the session's rate.
    for reply in (passed, after_clear):
        assert re.fullmatch(r"A+E", kinds(reply)), kinds(reply)
        assert {(f.sample_rate, f.num_channels) for f in reply if isinstance(f, rtc.AudioFrame)} == {(RATE, 1)}
        assert pcm_of(reply) == next_reply
