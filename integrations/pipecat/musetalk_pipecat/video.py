"""`MuseTalkVideoService`: a MuseTalk real-time session as a Pipecat frame processor.

Placed after the TTS and before the output transport. The TTS audio goes to the session instead of
downstream; every frame the session sends (speaking or idle, 25 a second) comes back out as an RGB
`OutputImageRawFrame` with `sync_with_audio`, followed by that frame's audio, so the transport shows
each picture when its own audio starts to play. Speaking audio goes out as `TTSAudioRawFrame` (the
transport counts it as the bot speaking), idle audio (zeros) as plain `OutputAudioRawFrame`.

The mapping onto the session's protocol (docs/realtime.md in the server's repository):
- the first TTS audio after a start, an `end` or an interrupt opens an utterance; the server numbers
  utterances 1, 2, 3... the same way, so a reply and its utterance share a number;
- `TTSStoppedFrame` sends `end` and is held until that utterance's `speech_ended`, so whatever
  follows the reply downstream waits for the avatar to finish saying it;
- `InterruptionFrame` sends `interrupt`; frames of the cut replies still in flight play silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
from typing import Any

from loguru import logger
from PIL import Image
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory
from websockets.exceptions import ConnectionClosed

from musetalk_client import AsyncRealtimeSession, ClientError, RealtimeFrame, mono_pcm16, open_realtime

__all__ = ["MuseTalkVideoService"]

KEEPALIVE_S = 15.0  # a `ping` this often: the server closes a session silent for its idle timeout (60 s)
STOP_GRACE_S = 2.0  # a held TTSStoppedFrame goes on this long after its audio's duration, speech_ended or not
PCM_BYTES = 2  # PCM16 mono


def decode_rgb(jpeg: bytes, size: tuple[int, int] | None = None) -> tuple[bytes, tuple[int, int]]:
    """A frame's JPEG as packed RGB bytes and its (width, height), as OutputImageRawFrame wants;
    at `size` if given. The JPEG decoder scales by 1/2, 1/4 or 1/8 as it decodes (PIL's draft
    mode), far cheaper than decoding whole and resizing: a size at one of those fractions of the
    avatar's costs no resize at all."""
    with Image.open(io.BytesIO(jpeg)) as image:
        if size is not None:
            image.draft("RGB", size)
        rgb = image.convert("RGB")
        if size is not None and rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        return rgb.tobytes(), rgb.size


def error_category(error: BaseException) -> ErrorCategory | None:
    """Pipecat's category for a refusal (HTTP status or WebSocket close code) or a lost session."""
    if isinstance(error, ClientError):
        return {429: ErrorCategory.RATE_LIMIT, 4429: ErrorCategory.RATE_LIMIT,
                401: ErrorCategory.AUTHENTICATION, 4401: ErrorCategory.AUTHENTICATION,
                404: ErrorCategory.INVALID_REQUEST, 4404: ErrorCategory.INVALID_REQUEST,
                4400: ErrorCategory.INVALID_REQUEST}.get(error.status, ErrorCategory.SERVER)
    if isinstance(error, (ConnectionClosed, OSError)):
        return ErrorCategory.CONNECTIVITY
    return None


class MuseTalkVideoService(FrameProcessor):
    """The avatar of a Pipecat bot, rendered live by a MuseTalk server.

    Args:
        base_url: the server, e.g. "http://127.0.0.1:8000".
        avatar_id: a preprocessed avatar on that server.
        api_key: the server's MUSETALK_API_KEY, if it has one.
        sample_rate: the session's audio rate; by default the pipeline's output rate
            (`PipelineParams.audio_out_sample_rate`), which is what TTS services produce. TTS audio
            at any other rate is resampled to it.
        audio_passthrough_on_error: when the session is refused or lost, pass the TTS audio on
            unchanged (the bot keeps talking, without video) instead of dropping it.
        video_size: (width, height) of the pictures, e.g. the transport's video_out_width and
            video_out_height; the avatar's own size by default. Half or a quarter of the avatar's
            size is cheapest (see `decode_rgb`).
    """

    def __init__(self, *, base_url: str, avatar_id: str, api_key: str | None = None,
                 sample_rate: int | None = None, audio_passthrough_on_error: bool = False,
                 video_size: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base_url, self._avatar_id, self._api_key = base_url, avatar_id, api_key
        self._sample_rate = sample_rate
        self._passthrough = audio_passthrough_on_error
        self._video_size = video_size
        self._session: AsyncRealtimeSession | None = None
        self._failed = False  # refused or lost: from then on, audio passes through or is dropped
        self._closing = False  # we close the session ourselves: its close is no loss
        self._tasks: list[asyncio.Task[None]] = []
        self._resampler = create_stream_resampler()
        self._resampled_from = 0  # the TTS rate the resampler was made for
        self._in_reply = False  # audio sent since the last end or interrupt
        self._utterance = 0  # the number the server gave (or will give) the latest reply
        self._reply_samples = 0  # audio sent for the latest reply, at the session's rate
        self._cut_through = 0  # utterances up to this number were interrupted: their frames play silent
        self._ttfb_utterance = 0  # the reply whose first speaking frame ends the TTFB measurement
        self._held: dict[int, TTSStoppedFrame] = {}  # utterance -> its stop frame, until speech_ended
        self._all_spoken = asyncio.Event()
        self._all_spoken.set()

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def session(self) -> AsyncRealtimeSession | None:
        """The open session (its `ready` says the avatar's fps, size and audio rate), or None."""
        return self._session

    # --- frames in --------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._open(self._sample_rate or self.processor_setup.audio_out_sample_rate)
        elif isinstance(frame, EndFrame):
            await self._finish_speaking()
            await self._close()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._speak(frame)
        elif isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._stop(frame)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, frame: TTSAudioRawFrame) -> None:
        if self._session is None:
            if self._passthrough:
                await self.push_frame(frame)
            return
        pcm = await self._resample(frame)
        if not self._in_reply:
            self._in_reply, self._reply_samples = True, 0
            self._utterance += 1
            self._ttfb_utterance = self._utterance
            await self.start_ttfb_metrics()
        self._reply_samples += len(pcm) // PCM_BYTES
        if pcm:
            await self._send(self._session.send_audio(pcm))

    async def _resample(self, frame: TTSAudioRawFrame) -> bytes:
        """The frame's audio as mono PCM16 at the session's rate. Most Pipecat TTS services make
        mono; a stereo one is mixed down, not read as mono at twice its length."""
        assert self._session is not None
        pcm = mono_pcm16(frame.audio, frame.num_channels)
        if frame.sample_rate == self._session.sample_rate:
            return pcm
        if frame.sample_rate != self._resampled_from:  # a stream resampler serves one pair of rates
            self._resampler, self._resampled_from = create_stream_resampler(), frame.sample_rate
        return await self._resampler.resample(pcm, frame.sample_rate, self._session.sample_rate)

    async def _stop(self, frame: TTSStoppedFrame) -> None:
        """`end` the reply and hold its stop frame until the avatar has said it (or forward it
        at once when there is nothing to wait for)."""
        if self._session is None or not self._in_reply:
            await self.push_frame(frame)
            return
        tail = await self._resampler.flush()
        self._reply_samples += len(tail) // PCM_BYTES
        if tail:
            await self._send(self._session.send_audio(tail))
        await self._send(self._session.end())
        self._in_reply = False
        self._held[self._utterance] = frame
        self._all_spoken.clear()
        # A fallback, should speech_ended never come: the reply's duration (all of it may still be
        # queued on the server), plus a grace.
        self._start(self._release_late(self._utterance, self._reply_samples / self._session.sample_rate))

    async def _interrupt(self) -> None:
        """Cut the reply being spoken and everything queued behind it; its stop frames go too."""
        self._cut_through = self._utterance
        self._in_reply = False
        self._held.clear()
        self._all_spoken.set()
        await self._resampler.reset()
        if self._session is not None:
            await self._send(self._session.interrupt())

    # --- the session ------------------------------------------------------------------------

    async def _open(self, sample_rate: int) -> None:
        try:
            self._session = await open_realtime(self._base_url, self._avatar_id, sample_rate=sample_rate,
                                                api_key=self._api_key)
        except (ClientError, OSError, TimeoutError) as e:
            await self._fail(f"MuseTalk refused the session: {e}", e)
            return
        logger.debug(f"{self}: session open, {self._session.ready}")
        self._start(self._read(self._session))
        self._start(self._keep_alive(self._session))

    async def _send(self, sending: Any) -> None:
        """One send on the session; a failure there is the session lost, which the reader reports."""
        with contextlib.suppress(ConnectionClosed):
            await sending

    async def _read(self, session: AsyncRealtimeSession) -> None:
        """Every frame out as a picture and its audio; events release held stop frames."""
        error: dict[str, Any] | None = None  # the server's `error` event before it closes
        try:
            async for item in session:
                if isinstance(item, RealtimeFrame):
                    await self._show(item)
                elif item.get("type") == "speech_ended":
                    await self._spoken(item["utterance"], item["reason"])
                elif item.get("type") == "error":
                    error = item
        except (ValueError, struct.error, OSError) as e:  # a message we cannot read: as good as lost
            error = {"detail": f"{type(e).__name__}: {e}"}
        if not self._closing:
            code, reason = session.ws.close_code, (error or {}).get("detail") or session.ws.close_reason
            message = f"MuseTalk session lost (close {code or 'without a code'}: {reason or 'connection dropped'})"
            await self._fail(message, ConnectionError(message))

    async def _show(self, frame: RealtimeFrame) -> None:
        rgb, size = await asyncio.to_thread(decode_rgb, frame.jpeg, self._video_size)
        picture = OutputImageRawFrame(image=rgb, size=size, format="RGB")
        picture.sync_with_audio = True
        rate = frame.sample_rate
        audio: OutputAudioRawFrame
        if frame.speaking and frame.header.utterance > self._cut_through:
            if frame.header.utterance == self._ttfb_utterance and not frame.underrun:
                self._ttfb_utterance = 0
                await self.stop_ttfb_metrics()
            audio = TTSAudioRawFrame(audio=frame.audio, sample_rate=rate, num_channels=1)
        else:
            audio = OutputAudioRawFrame(audio=bytes(len(frame.audio)), sample_rate=rate, num_channels=1)
        await self.push_frame(picture)
        await self.push_frame(audio)

    async def _spoken(self, utterance: int, reason: str) -> None:
        frame = self._held.pop(utterance, None)
        if frame is not None and reason == "end":
            await self.push_frame(frame)
        if not self._held:
            self._all_spoken.set()

    async def _release_late(self, utterance: int, duration_s: float) -> None:
        await asyncio.sleep(duration_s + STOP_GRACE_S)
        if utterance in self._held:
            logger.warning(f"{self}: no speech_ended for utterance {utterance}; releasing its TTSStoppedFrame")
            await self._spoken(utterance, "end")

    async def _keep_alive(self, session: AsyncRealtimeSession) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self._send(session.ping())

    async def _fail(self, message: str, error: Exception) -> None:
        """Refused or lost: say so once, then pass audio through (or drop it), and let go of
        held stop frames so the pipeline does not wait for an avatar that is gone."""
        if self._failed:
            return
        self._failed, self._session = True, None
        await self.push_error(message, exception=error, category=error_category(error))
        for utterance in list(self._held):
            await self._spoken(utterance, "end")

    async def _finish_speaking(self) -> None:
        """Before an EndFrame closes the session: let the avatar finish the replies it holds."""
        if self._session is not None and not self._all_spoken.is_set():
            pending_s = self._reply_samples / self._session.sample_rate
            try:
                await asyncio.wait_for(self._all_spoken.wait(), pending_s + STOP_GRACE_S)
            except TimeoutError:
                logger.warning(f"{self}: ending before the avatar finished speaking")

    async def _close(self) -> None:
        self._closing = True
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _start(self, coroutine: Any) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(self.create_task(coroutine))
