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
- After `keepalive_s` without a message, a `ping` goes out: the server closes a session with no
  message and nothing to say for `MUSETALK_REALTIME_IDLE_TIMEOUT_S`, and an agent may listen longer.
- When the session is lost under a live call (the server died, the network dropped, the server closed
  it with an error), `lost` says why and, with `audio_passthrough_on_error` (the default), the agent
  speaks on without video: the audio the session had not yet spoken comes out first, then every later
  reply, as `rtc.AudioFrame`s and `AudioSegmentEnd`s with no video frame, so the runner's audio track
  and playback events carry on. Without it, the iterator raises the loss and the runner stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator
from websockets.exceptions import ConnectionClosed

from musetalk_client import AsyncRealtimeSession, ClientError, RealtimeFrame, mono_pcm16

from .frames import PCM_BYTES, JpegDecoder, pcm_frame

__all__ = ["MuseTalkVideoGenerator", "DEFAULT_MAX_AHEAD_S", "DEFAULT_KEEPALIVE_S"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_AHEAD_S = 10.0  # well under the server's default MUSETALK_REALTIME_MAX_BUFFER_S (30 s)
DEFAULT_KEEPALIVE_S = 15.0  # well under the server's default MUSETALK_REALTIME_IDLE_TIMEOUT_S (60 s)
ABNORMAL_CLOSURE = 1006  # RFC 6455: the connection dropped without a close frame

Unspoken = bytes | AudioSegmentEnd  # session PCM sent (or, once lost, to pass through), and utterance ends


class MuseTalkVideoGenerator(VideoGenerator):
    """A `VideoGenerator` for `AvatarRunner`, speaking through an open `AsyncRealtimeSession`.

    The generator owns the session from here on: `aclose()` closes it. Iterate it once.
    `audio_passthrough_on_error`: if the session is lost mid-call, go on with the agent's audio and no
    video (the default) instead of ending the iteration with the loss; `lost` holds the loss either way.
    `keepalive_s`: the longest the session goes without a message from here (keep it under the
    server's `MUSETALK_REALTIME_IDLE_TIMEOUT_S`).
    """

    def __init__(self, session: AsyncRealtimeSession, *, max_ahead_s: float = DEFAULT_MAX_AHEAD_S,
                 audio_passthrough_on_error: bool = True, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> None:
        self.session = session
        self.sample_rate: int = session.sample_rate
        self.fps: float = session.ready["fps"]
        self.width: int = session.ready["width"]
        self.height: int = session.ready["height"]
        self.audio_passthrough_on_error = audio_passthrough_on_error
        self.lost: ClientError | None = None  # why the session ended under a live call
        self._decoder = JpegDecoder()
        self._max_ahead = int(max_ahead_s * self.sample_rate)  # samples
        self._keepalive_s = keepalive_s
        self._last_message = time.monotonic()  # the last one sent to the session
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0  # its input rate
        self._utterance_open = False  # audio sent since the last `end` or `interrupt`
        self._utterances = 0  # utterances this client started; the server numbers them 1, 2, 3...
        self._cancelled_through = 0  # utterances up to this number were interrupted
        self._clears = 0  # clear_buffer calls, so a push that waited across one is dropped
        # What was sent and not yet spoken, in order, with the ends of utterances between: kept so a
        # lost session's unspoken audio can still be played, and counted for `max_ahead_s`.
        self._unspoken: deque[Unspoken] = deque()
        self._unspoken_samples = 0
        self._spoken = asyncio.Event()  # some of it was spoken (or dropped): a held push may go on
        self._queued = asyncio.Event()  # some was added: the passthrough may go on
        self._error: dict[str, Any] | None = None  # the error event that preceded a close
        self._closing = False

    # --- audio in -----------------------------------------------------------------------------

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            await self._end()
            return
        clears = self._clears
        while self._unspoken_samples > self._max_ahead:
            self._spoken.clear()
            await self._spoken.wait()
        if clears != self._clears or self._dropping:
            return  # cleared while this frame waited (it belongs to the cancelled reply), or nobody to hear it
        for pcm in self._session_pcm(frame):
            await self._send(pcm)

    async def _end(self) -> None:
        if self._resampler is not None:
            for pcm in self._resampler.flush():
                await self._send(bytes(pcm.data))
            self._resampler = None
        if self._utterance_open and not self._dropping:
            self._utterance_open = False
            self._queue(AudioSegmentEnd())
            await self._tell_session(self.session.end)

    def _session_pcm(self, frame: rtc.AudioFrame) -> list[bytes]:
        """The frame as mono PCM16 at the session's rate."""
        if frame.num_channels > 1:
            frame = pcm_frame(mono_pcm16(bytes(frame.data), frame.num_channels), frame.sample_rate)
        if frame.sample_rate == self.sample_rate:
            return [bytes(frame.data)]
        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            self._resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate)
            self._resampler_rate = frame.sample_rate
        return [bytes(f.data) for f in self._resampler.push(frame)]

    async def _send(self, pcm: bytes) -> None:
        if not pcm or self._dropping:
            return
        if not self._utterance_open:
            self._utterance_open = True
            self._utterances += 1
        self._queue(pcm)
        await self._tell_session(self.session.send_audio, pcm)

    async def clear_buffer(self) -> None:
        self._clears += 1
        self._cancelled_through = self._utterances
        self._utterance_open = False
        self._resampler = None
        self._forget_unspoken()
        await self._tell_session(self.session.interrupt)

    async def _tell_session(self, message: Callable[..., Awaitable[None]], *args: Any) -> None:
        """One message to the session while it lasts. A send that finds it closed is that loss
        showing early: the frame reader reports it (and, passing through, still plays the audio)."""
        if self.lost is None:
            self._last_message = time.monotonic()
            with contextlib.suppress(ConnectionClosed):
                await message(*args)

    # --- what is not yet spoken ---------------------------------------------------------------

    def _queue(self, item: Unspoken) -> None:
        self._unspoken.append(item)
        self._unspoken_samples += len(item) // PCM_BYTES if isinstance(item, bytes) else 0
        self._queued.set()

    def _take(self) -> Unspoken:
        item = self._unspoken.popleft()
        self._unspoken_samples -= len(item) // PCM_BYTES if isinstance(item, bytes) else 0
        self._spoken.set()
        return item

    def _spoke(self, samples: int, last: bool) -> None:
        """The session spoke `samples` more of what was sent; after an utterance's `last` frame,
        nothing of that utterance is left (its last frame is zero-padded past the PCM sent)."""
        remaining = samples * PCM_BYTES
        while remaining > 0 and self._unspoken and isinstance(self._unspoken[0], bytes):
            chunk = self._take()
            assert isinstance(chunk, bytes)
            if len(chunk) > remaining:
                self._unspoken.appendleft(chunk[remaining:])
                self._unspoken_samples += (len(chunk) - remaining) // PCM_BYTES
            remaining -= len(chunk)
        if last and any(isinstance(item, AudioSegmentEnd) for item in self._unspoken):
            while not isinstance(self._take(), AudioSegmentEnd):
                pass

    def _forget_unspoken(self) -> None:
        self._unspoken.clear()
        self._unspoken_samples = 0
        self._spoken.set()

    @property
    def _dropping(self) -> bool:
        """Lost, and not passing audio through: audio in goes nowhere."""
        return self.lost is not None and not self.audio_passthrough_on_error

    # --- frames out ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        # 1. The avatar, frame by frame, as long as the session lasts.
        async for item in self.session:
            if time.monotonic() - self._last_message > self._keepalive_s:
                await self._tell_session(self.session.ping)
            if not isinstance(item, RealtimeFrame):
                self._on_event(item)
                continue
            yield await asyncio.to_thread(self._decoder.decode, item.jpeg)
            if not item.speaking or item.header.utterance <= self._cancelled_through:
                continue
            if not item.underrun:
                self._spoke(len(item.audio) // PCM_BYTES, item.last)
            yield pcm_frame(item.audio, item.sample_rate)
            if item.last:
                yield AudioSegmentEnd()
        if self._closing:
            return
        # 2. Lost under a live call: say so once, then stop, or go on as audio only.
        self.lost = self._lost()
        if not self.audio_passthrough_on_error:
            self._forget_unspoken()
            raise self.lost
        logger.error("MuseTalk avatar lost (%s); the agent speaks on without video", self.lost)
        # 3. What the session had not spoken yet, then every later reply, as it comes.
        while not self._closing:
            if not self._unspoken:
                self._queued.clear()
                await self._queued.wait()
                continue
            unspoken = self._take()
            yield pcm_frame(unspoken, self.sample_rate) if isinstance(unspoken, bytes) else unspoken

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error" and event.get("code") == "too_large":
            # The chunk was dropped and the session goes on; what was sent no longer says what the
            # session holds, so stop holding audio back on that count rather than wait forever.
            # The utterances' ends stay, so each reply still finishes if the session is lost later.
            logger.warning("MuseTalk dropped audio: %s", event.get("detail"))
            ends = [item for item in self._unspoken if isinstance(item, AudioSegmentEnd)]
            self._forget_unspoken()
            self._unspoken.extend(ends)
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
        self._queued.set()
        await self.session.close()
