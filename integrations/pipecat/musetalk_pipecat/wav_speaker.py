"""`WavSpeaker`: a stand-in for a TTS service that answers every `TTSSpeakFrame` with a WAV file.

For demos and tests where no TTS (and no cloud key) is at hand: it speaks the way Pipecat's TTS
services do (TTSStartedFrame, TTSAudioRawFrame chunks at the file's own rate, TTSStoppedFrame),
so a real TTS takes its place in the pipeline without other changes.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from pipecat.frames.frames import Frame, TTSAudioRawFrame, TTSSpeakFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from musetalk_client import mono_pcm16

__all__ = ["WavSpeaker", "read_wav_mono"]

CHUNK_S = 0.02  # TTS services stream 10-40 ms chunks


def read_wav_mono(path: str | Path, seconds: float | None = None) -> tuple[bytes, int]:
    """PCM16 mono (channels averaged) and the rate of a 16-bit WAV, cut to its first `seconds`."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples; WavSpeaker reads 16-bit WAV")
        rate, channels = w.getframerate(), w.getnchannels()
        frames = w.readframes(w.getnframes() if seconds is None else round(seconds * rate))
    return mono_pcm16(frames, channels), rate


class WavSpeaker(FrameProcessor):
    """Answers each `TTSSpeakFrame` with `wav` (its first `seconds`), in 20 ms chunks; `realtime`
    paces them at the audio's own speed, else they go out as fast as a streaming TTS sends them."""

    def __init__(self, wav: str | Path, *, seconds: float | None = None, realtime: bool = False) -> None:
        super().__init__()
        self.pcm, self.sample_rate = read_wav_mono(wav, seconds)
        self._realtime = realtime

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame):
            await self._say()
        else:
            await self.push_frame(frame, direction)

    def chunks(self) -> list[bytes]:
        """The audio as it is sent: 20 ms PCM16 chunks."""
        size = round(CHUNK_S * self.sample_rate) * 2
        return [self.pcm[start:start + size] for start in range(0, len(self.pcm), size)]

    async def _say(self) -> None:
        await self.push_frame(TTSStartedFrame())
        for chunk in self.chunks():
            await self.push_frame(TTSAudioRawFrame(chunk, self.sample_rate, 1))
            await asyncio.sleep(CHUNK_S if self._realtime else 0)
        await self.push_frame(TTSStoppedFrame())
