"""LiveKit Agents' `VideoGenerator` over a MuseTalk real-time session.

What goes in and out, and why each rule:
- `push_audio(AudioFrame)` sends the PCM to the session (resampled and down-mixed to the session's
  mono rate when the frame's differs); `push_audio(AudioSegmentEnd)` sends `end`.
- `clear_buffer()` sends `interrupt`.
- The iterator yields an `rtc.VideoFrame` for every frame the session sends, idle ones included, from
  the first one on: the agent waits for the avatar's video track before its first reply. Only speaking
  frames yield an `rtc.AudioFrame` (an underrun's zeros included, so audio and video stay aligned):
  `AvatarRunner` reports `playback_started` on the first audio frame it reads, so idle audio would make
  the agent believe speech began at once. After the last frame of an utterance closed by `end`, it
  yields `AudioSegmentEnd`, which the runner turns into `playback_finished`.
- An interrupted utterance's frames already on the wire still show, but without audio and without a
  closing `AudioSegmentEnd` (the runner reports that playback itself, as interrupted). The client counts
  utterances the way the server numbers them (audio while none is open starts the next), so it knows
  which frame numbers belong to what was cancelled.
- `push_audio` waits while more than `max_ahead_s` of sent audio is not yet spoken: a TTS delivers a
  reply faster than real time, and the server drops chunks past `MUSETALK_REALTIME_MAX_BUFFER_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from musetalk_client import AsyncRealtimeSession, ClientError, RealtimeFrame

from .frames import PCM_BYTES, JpegDecoder, pcm_frame

__all__ = ["MuseTalkVideoGenerator", "DEFAULT_MAX_AHEAD_S"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_AHEAD_S = 10.0  # well under the server's default MUSETALK_REALTIME_MAX_BUFFER_S (30 s)
ABNORMAL_CLOSURE = 1006  # RFC 6455: the connection dropped without a close frame


class MuseTalkVideoGenerator(VideoGenerator):
    """A `VideoGenerator` for `AvatarRunner`, speaking through an open `AsyncRealtimeSession`.

    The generator owns the session from here on: `aclose()` closes it. Iterate it once.
    """

    def __init__(self, session: AsyncRealtimeSession, *, max_ahead_s: float = DEFAULT_MAX_AHEAD_S) -> None:
        self.session = session
        self.sample_rate: int = session.sample_rate
        self.fps: float = session.ready["fps"]
        self.width: int = session.ready["width"]
        self.height: int = session.ready["height"]
        self._decoder = JpegDecoder()
        self._max_ahead = int(max_ahead_s * self.sample_rate)  # samples
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0  # its input rate
        self._utterance_open = False  # audio sent since the last `end` or `interrupt`
        self._utterances = 0  # utterances this client started; the server numbers them 1, 2, 3...
        self._cancelled_through = 0  # utterances up to this number were interrupted
        self._clears = 0  # clear_buffer calls, so a push that waited across one is dropped
        self._unspoken = 0  # samples sent and not yet spoken
        self._spoken = asyncio.Event()
        self._error: dict[str, Any] | None = None  # the error event that preceded a close
        self._closing = False

    # --- audio in -----------------------------------------------------------------------------

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            await self._end()
            return
        clears = self._clears
        while self._unspoken > self._max_ahead:
            self._spoken.clear()
            await self._spoken.wait()
        if clears != self._clears:
            return  # cleared while this frame waited: it belongs to the cancelled reply
        for pcm in self._session_pcm(frame):
            await self._send(pcm)

    async def _end(self) -> None:
        if self._resampler is not None:
            for pcm in self._resampler.flush():
                await self._send(bytes(pcm.data))
            self._resampler = None
        if self._utterance_open:
            self._utterance_open = False
            await self.session.end()

    def _session_pcm(self, frame: rtc.AudioFrame) -> list[bytes]:
        """The frame as mono PCM16 at the session's rate."""
        if frame.num_channels > 1:
            samples = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels)
            mono = samples.mean(axis=1).astype(np.int16).tobytes()
            frame = pcm_frame(mono, frame.sample_rate)
        if frame.sample_rate == self.sample_rate:
            return [bytes(frame.data)]
        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            self._resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate)
            self._resampler_rate = frame.sample_rate
        return [bytes(f.data) for f in self._resampler.push(frame)]

    async def _send(self, pcm: bytes) -> None:
        if not pcm:
            return
        if not self._utterance_open:
            self._utterance_open = True
            self._utterances += 1
        self._unspoken += len(pcm) // PCM_BYTES
        await self.session.send_audio(pcm)

    async def clear_buffer(self) -> None:
        self._clears += 1
        self._cancelled_through = self._utterances
        self._utterance_open = False
        self._resampler = None
        self._unspoken = 0
        self._spoken.set()
        await self.session.interrupt()

    # --- frames out ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for item in self.session:
            if not isinstance(item, RealtimeFrame):
                self._on_event(item)
                continue
            yield await asyncio.to_thread(self._decoder.decode, item.jpeg)
            if not item.speaking or item.header.utterance <= self._cancelled_through:
                continue
            if not item.underrun:
                self._unspoken = max(0, self._unspoken - len(item.audio) // PCM_BYTES)
                self._spoken.set()
            yield pcm_frame(item.audio, item.sample_rate)
            if item.last:
                yield AudioSegmentEnd()
        if not self._closing:
            raise self._lost()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error" and event.get("code") == "too_large":
            # The chunk was dropped and the session goes on; what was sent no longer says what is
            # buffered, so stop holding audio back on that count rather than wait forever.
            logger.warning("MuseTalk dropped audio: %s", event.get("detail"))
            self._unspoken = 0
            self._spoken.set()
        elif event.get("type") == "error":
            self._error = event  # the close follows; `_lost` reports it

    def _lost(self) -> ClientError:
        """The session ended while the avatar was still wanted: say why, as the server did."""
        code = self.session.ws.close_code or ABNORMAL_CLOSURE
        if self._error is not None:
            return ClientError(code, self._error["code"], self._error["detail"])
        return ClientError(code, "session_lost", "the MuseTalk real-time session ended without a reason "
                                                 "(the connection dropped: is the server up?)")

    async def aclose(self) -> None:
        """Close the session; the iterator then ends quietly."""
        self._closing = True
        await self.session.close()
