"""MuseTalkVideoService in a real Pipecat pipeline against a real MuseTalk server (lite engine) on
loopback: what comes out of it, frame by frame, for a reply, an interruption, a refusal and a
server that dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from musetalk_pipecat import MuseTalkVideoService, WavSpeaker
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat_harness import Bot, running_bot

from conftest import MEDIA, RunningServer, start_server, stop_server
from musetalk_client import open_realtime

SPEECH_16K = MEDIA / "speech.wav"  # 16 kHz mono
SPEECH_44K = MEDIA / "speech_5s.wav"  # 44.1 kHz stereo
ERROR_WITHIN_S = 2.0  # a refusal or a lost session is an ErrorFrame this soon


def service(server, **options) -> MuseTalkVideoService:
    return MuseTalkVideoService(base_url=server.url, avatar_id=server.avatar_id, **options)


def output(bot: Bot) -> list:
    """What the service sent downstream: pictures, audio and the frames it forwarded or held."""
    return bot.down.of((OutputImageRawFrame, OutputAudioRawFrame, TTSStoppedFrame))


def pairs(frames: list) -> list[tuple[OutputImageRawFrame, OutputAudioRawFrame]]:
    """(picture, its audio) for every video frame; asserts that each picture has its audio next."""
    media = [f for f in frames if not isinstance(f, TTSStoppedFrame)]
    if media and isinstance(media[-1], OutputImageRawFrame):
        media = media[:-1]  # its audio was on its way when we looked
    pictures, sounds = media[0::2], media[1::2]
    assert all(isinstance(p, OutputImageRawFrame) for p in pictures)
    assert all(isinstance(s, OutputAudioRawFrame) for s in sounds)
    return list(zip(pictures, sounds, strict=True))


def spoken(frames: list) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame))


def speaking_frames(n: int):
    return lambda frames: sum(isinstance(f, TTSAudioRawFrame) for f in frames) >= n


def stopped(n: int = 1):
    return lambda frames: sum(isinstance(f, TTSStoppedFrame) for f in frames) >= n


async def test_a_reply_comes_back_as_pictures_each_with_its_audio(musetalk_server):
    """TTS at 44.1 kHz, the pipeline (and so the session) at 24 kHz: every frame is an RGB picture
    of the avatar's size, then its 40 ms of audio; idle frames before and after the reply carry
    zeros; the speaking frames' audio is the TTS audio resampled; the stop frame is held until the
    last of it; the time to the first speaking frame is a TTFB metric."""
    speaker = WavSpeaker(SPEECH_44K, seconds=1.5)
    async with running_bot(service(musetalk_server), speaker, audio_out_sample_rate=24000) as bot:
        await bot.down.wait_for(lambda frames: len(pairs(output_of(frames))) >= 5)  # idle first
        assert bot.service.session is not None
        ready = bot.service.session.ready
        await bot.queue(TTSSpeakFrame("hello"))
        await bot.down.wait_for(stopped())
        idle_after = len(pairs(output(bot))) + 5
        await bot.down.wait_for(lambda frames: len(pairs(output_of(frames))) >= idle_after)
    frames = output(bot)
    video = pairs(frames)
    width, height, rate = ready["width"], ready["height"], ready["sample_rate"]
    assert rate == 24000
    per_frame = 2 * rate // round(ready["fps"])
    for picture, sound in video:
        assert (picture.size, picture.format, len(picture.image)) == ((width, height), "RGB", width * height * 3)
        assert picture.sync_with_audio
        assert (sound.sample_rate, sound.num_channels, len(sound.audio)) == (rate, 1, per_frame)
    kinds = [isinstance(sound, TTSAudioRawFrame) for _, sound in video]
    first, last = kinds.index(True), len(kinds) - 1 - kinds[::-1].index(True)
    assert first >= 5 and len(kinds) - 1 - last >= 5 and all(kinds[first:last + 1])  # idle, the reply, idle
    assert not any(any(sound.audio) for _, sound in video[:first] + video[last + 1:])

    resampler = create_stream_resampler()  # a stream resampler's output depends a little on the chunking
    expected = b"".join([await resampler.resample(chunk, speaker.sample_rate, rate) for chunk in speaker.chunks()])
    expected += await resampler.flush()
    said = np.frombuffer(spoken(frames), "<i2").astype(int)
    padded = np.frombuffer(expected + bytes(-len(expected) % per_frame), "<i2").astype(int)
    # soxr's float arithmetic differs in the last bit from one run to another (seen: 1 LSB).
    assert len(said) == len(padded) and np.abs(said - padded).max() <= 2

    stop_at = frames.index(bot.down.of(TTSStoppedFrame)[0])
    assert stop_at > frames.index(video[last][1])  # held until the reply was said, not forwarded at once

    ttfb = [d.value for m in bot.down.of(MetricsFrame) for d in m.data
            if isinstance(d, TTFBMetricsData) and d.processor == bot.service.name and d.value]  # 0: the initial report
    assert len(ttfb) == 1 and 0 < ttfb[0] < 1.0, ttfb


def output_of(frames: list) -> list:
    return [f for f in frames if isinstance(f, (OutputImageRawFrame, OutputAudioRawFrame, TTSStoppedFrame))]


async def test_an_interruption_cuts_the_reply_and_the_next_one_plays(musetalk_server):
    """Interrupted mid-reply, the avatar falls silent within a few frames and the cut reply's stop
    frame never comes; idle frames flow; the next reply plays whole (16 kHz through, unchanged)."""
    speaker = WavSpeaker(SPEECH_16K, seconds=3.0)
    async with running_bot(service(musetalk_server), speaker, audio_out_sample_rate=16000) as bot:
        await bot.queue(TTSSpeakFrame("a long answer"))
        await bot.down.wait_for(speaking_frames(5))
        await bot.queue(InterruptionFrame())
        await bot.down.wait_for(lambda frames: any(isinstance(f, InterruptionFrame) for f in frames))
        cut_at = len(bot.down.frames)
        await bot.down.wait_for(lambda frames: len(pairs(output_of(frames[cut_at:]))) >= 10)
        after_cut = output_of([f for _, f in bot.down.frames[cut_at:]])
        await bot.queue(TTSSpeakFrame("the next answer"))
        await bot.down.wait_for(stopped())
    late = [i for i, (_, sound) in enumerate(pairs(after_cut)) if isinstance(sound, TTSAudioRawFrame)]
    assert max(late, default=-1) < 3, late  # at most the frames already on their way
    assert len(bot.down.of(TTSStoppedFrame)) == 1  # the cut reply's was dropped; this is the next one's
    assert not any(isinstance(f, TTSStoppedFrame) for f in after_cut)
    next_reply = spoken(output(bot)[output(bot).index(after_cut[-1]) + 1:])
    per_frame = 2 * 16000 // 25
    assert next_reply == speaker.pcm + bytes(-len(speaker.pcm) % per_frame)


async def test_a_stereo_tts_is_mixed_down_not_read_as_twice_as_long(musetalk_server):
    """A TTS that sends stereo frames (num_channels 2): the avatar says the two channels' mean, for
    as long as the reply lasts, not the interleaved samples read as mono at twice its length."""
    speaker = WavSpeaker(SPEECH_16K, seconds=1.0)
    left = np.frombuffer(speaker.pcm, "<i2")
    stereo = np.stack([left, np.zeros_like(left)], axis=1).astype("<i2").tobytes()  # the right side silent
    chunk = 2 * 2 * 320  # 20 ms of 16 kHz stereo
    async with running_bot(service(musetalk_server), speaker, audio_out_sample_rate=16000) as bot:
        await bot.queue(TTSStartedFrame())
        for start in range(0, len(stereo), chunk):
            await bot.queue(TTSAudioRawFrame(stereo[start:start + chunk], 16000, 2))
        await bot.queue(TTSStoppedFrame())
        await bot.down.wait_for(stopped())
    said = spoken(output(bot))
    per_frame = 2 * 16000 // 25
    halved = (left / 2).round().astype("<i2").tobytes()
    assert said == halved + bytes(-len(halved) % per_frame)


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server that admits one real-time session at a time, for the refusal and then the kill
    (starting a server and preprocessing its avatar takes about 30 s here: one does for both)."""
    server = start_server(tmp_path_factory.mktemp("one-slot") / "results", max_realtime_streams="1")
    yield server
    stop_server(server)


async def test_a_refused_session_is_an_error_frame_and_the_bot_keeps_talking(one_slot_server):
    """The server's one real-time slot is taken (MUSETALK_MAX_REALTIME_STREAMS=1): the session is
    refused with 4429, an ErrorFrame says so at once, and with audio passthrough the TTS audio goes
    on downstream untouched, without pictures."""
    server = one_slot_server
    async with await open_realtime(server.url, server.avatar_id):
        speaker = WavSpeaker(SPEECH_16K, seconds=1.0)
        started = time.monotonic()
        async with running_bot(service(server, audio_passthrough_on_error=True), speaker) as bot:
            await bot.up.wait_for(lambda frames: any(isinstance(f, ErrorFrame) for f in frames))
            refused_after = time.monotonic() - started
            await bot.queue(TTSSpeakFrame("still talking"))
            await bot.down.wait_for(stopped())
    (error,) = bot.up.of(ErrorFrame)
    assert "4429" in error.error and "busy" in error.error and not error.fatal
    assert refused_after < ERROR_WITHIN_S, refused_after  # the pipeline's own start included
    assert not bot.down.of(OutputImageRawFrame)
    assert b"".join(f.audio for f in bot.down.of(TTSAudioRawFrame)) == speaker.pcm


async def test_a_killed_server_is_an_error_frame_and_the_held_stop_goes_on(one_slot_server):
    """The server dies mid-reply: an ErrorFrame within two seconds, the held stop frame is let go,
    and without passthrough the next reply's audio is dropped (its stop frame still passes)."""
    server = one_slot_server
    speaker = WavSpeaker(SPEECH_16K, seconds=3.0)
    async with running_bot(service(server), speaker, audio_out_sample_rate=16000) as bot:
        await bot.queue(TTSSpeakFrame("an answer"))
        await bot.down.wait_for(speaking_frames(5))
        server.kill()
        killed = time.monotonic()
        await bot.up.wait_for(lambda frames: any(isinstance(f, ErrorFrame) for f in frames))
        lost_after = time.monotonic() - killed
        await bot.down.wait_for(stopped(), timeout=ERROR_WITHIN_S)
        audio_before = len(bot.down.of(TTSAudioRawFrame))
        await bot.queue(TTSSpeakFrame("into the void"))
        await bot.down.wait_for(stopped(2))
        await asyncio.sleep(0.2)
    (error,) = bot.up.of(ErrorFrame)
    assert "session lost" in error.error
    assert lost_after < ERROR_WITHIN_S, lost_after
    assert len(bot.down.of(TTSAudioRawFrame)) == audio_before
