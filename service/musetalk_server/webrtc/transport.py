"""The WebRTC transport of a real-time session: a feeding peer's microphone and data channel.

In: the peer's audio track, downmixed to PCM16 mono at 48 kHz (Opus's rate, so nothing is
resampled but by the session itself, for the engine) and cut into utterances by the voice gate
(render/realtime/voice_gate.py: silence never reaches the session, so the mouth shuts); and the
data channel's messages, the socket's own: JSON `end`, `interrupt`, `ping`, `config` as text,
PCM16 as binary. Out: events as JSON text on the data channel (held until it opens). Frames do
not go through the transport: the peer watches the session's `Broadcast` like any viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, ClassVar

import av
from aiortc import RTCDataChannel
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..errors import MuseTalkError
from ..render.realtime.protocol import error_event
from ..render.realtime.timeline import Plan
from ..render.realtime.transport import FrameFormat, OutputFrame, SessionClosed, SessionTransport
from ..render.realtime.voice_gate import VoiceGate
from .encoders import AUDIO_RATE

__all__ = ["MIC_RATE", "WebRtcTransport"]

MIC_RATE = AUDIO_RATE  # the session's audio rate, in and out
_HELD_EVENTS = 256  # events kept for a data channel not yet open (the oldest go first)


class WebRtcTransport(SessionTransport):
    wants: ClassVar[frozenset[FrameFormat]] = frozenset()  # frames go to the session's broadcast

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._channel: RTCDataChannel | None = None
        self._held: list[str] = []
        self._listener: asyncio.Task[None] | None = None
        self._gate = VoiceGate(MIC_RATE)
        self._closed = False

    # --- wiring (peer.py) --------------------------------------------------------------------

    def use_channel(self, channel: RTCDataChannel) -> None:
        self._channel = channel

        @channel.on("open")
        def _open() -> None:
            self._flush()

        @channel.on("message")
        def _message(message: bytes | str) -> None:
            if isinstance(message, str) and _is_interrupt(message):
                self._gate.reset()
            self._inbox.put_nowait(message)

        if channel.readyState == "open":
            self._flush()

    def hear(self, track: MediaStreamTrack) -> None:
        """Listen to the peer's microphone until it ends."""
        self._listener = asyncio.create_task(self._listen(track))

    def close(self) -> None:
        """The peer went away: the session's next `receive` ends it."""
        if not self._closed:
            self._closed = True
            self._inbox.put_nowait(None)
        if self._listener is not None:
            self._listener.cancel()

    async def _listen(self, track: MediaStreamTrack) -> None:
        mono = av.AudioResampler(format="s16", layout="mono", rate=MIC_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)  # an audio track's frames
                for chunk in mono.resample(frame):
                    for out in self._gate.push(chunk.to_ndarray().tobytes()):
                        self._inbox.put_nowait(out)

    def _flush(self) -> None:
        channel = self._channel
        while self._held and channel is not None and channel.readyState == "open":
            channel.send(self._held.pop(0))

    # --- SessionTransport --------------------------------------------------------------------

    async def receive(self) -> bytes | str:
        message = await self._inbox.get()
        if message is None:
            raise SessionClosed("the peer left")
        return message

    async def send_event(self, event: dict[str, Any]) -> None:
        if self._closed:
            raise SessionClosed("the peer left")
        self._held.append(json.dumps(event))
        del self._held[:-_HELD_EVENTS]
        self._flush()

    async def send_frame(self, plan: Plan, frame: OutputFrame) -> None:
        """Nothing: the peer's video and audio come from the session's broadcast."""

    async def fail(self, error: MuseTalkError) -> None:
        with contextlib.suppress(Exception):
            await self.send_event(error_event(error))

    @property
    def connected(self) -> bool:
        return not self._closed


def _is_interrupt(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False  # the session answers it with its own error
    return isinstance(body, dict) and body.get("type") == "interrupt"
