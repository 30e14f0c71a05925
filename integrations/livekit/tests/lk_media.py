"""Speech as LiveKit audio frames, and the generator's output read back, for the livekit tests."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from musetalk_client import RealtimeFrame

SPEECH = Path(__file__).resolve().parents[3] / "examples" / "media" / "speech.wav"  # 16 kHz mono
SPEECH_FROM_S = 1.0  # past the clip's lead-in
CHUNK_S = 0.02  # a TTS hands out 10-40 ms frames
ITEM_TIMEOUT_S = 5.0  # frames come every 40 ms: anything slower is a stall

Item = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd


def speech_pcm(seconds: float, rate: int, from_s: float = SPEECH_FROM_S) -> bytes:
    """`seconds` of the example speech (60 s long), from `from_s` on, as mono PCM16 at `rate`
    (LiveKit's own resampler)."""
    with wave.open(str(SPEECH)) as w:
        w.setpos(int(from_s * w.getframerate()))
        source, pcm = w.getframerate(), w.readframes(int(seconds * w.getframerate()))
    if rate == source:
        return pcm
    resampler = rtc.AudioResampler(source, rate)
    frames = resampler.push(rtc.AudioFrame(pcm, source, 1, len(pcm) // 2)) + resampler.flush()
    return b"".join(bytes(f.data) for f in frames)


def audio_frames(pcm: bytes, rate: int) -> list[rtc.AudioFrame]:
    """PCM16 cut into CHUNK_S frames, the way a TTS delivers it."""
    step = 2 * int(rate * CHUNK_S)
    return [rtc.AudioFrame(pcm[i:i + step], rate, 1, len(pcm[i:i + step]) // 2) for i in range(0, len(pcm), step)]


def kinds(items: list[Item]) -> str:
    """V for a video frame, A for an audio frame, E for AudioSegmentEnd: the order as a string."""
    return "".join("V" if isinstance(i, rtc.VideoFrame) else "A" if isinstance(i, rtc.AudioFrame) else "E"
                   for i in items)


async def take(stream: AsyncIterator[Item], until) -> list[Item]:
    """Items from `stream` until `until(items)` holds, each within ITEM_TIMEOUT_S."""
    items: list[Item] = []
    while not until(items):
        items.append(await asyncio.wait_for(anext(stream), ITEM_TIMEOUT_S))
    return items


def videos(n: int):
    return lambda items: sum(isinstance(i, rtc.VideoFrame) for i in items) >= n


def audios(n: int):
    return lambda items: sum(isinstance(i, rtc.AudioFrame) for i in items) >= n


def segment_end(items: list[Item]) -> bool:
    return bool(items) and isinstance(items[-1], AudioSegmentEnd)


class Tap:
    """An AsyncRealtimeSession seen through: every frame header the generator reads is kept in
    `headers`, so a test can check what the server did, not only what the generator yielded."""

    def __init__(self, session) -> None:
        self._session = session
        self.headers: list = []

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    async def __aiter__(self):
        async for item in self._session:
            if isinstance(item, RealtimeFrame):
                self.headers.append(item.header)
            yield item
