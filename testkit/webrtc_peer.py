"""A WebRTC client for tests and benchmarks: aiortc over loopback, as a browser would use the server.

`ClientPeer` offers what the contract asks (video `recvonly`; audio `sendrecv` with a microphone
track, or `recvonly`; a data channel for a feeder), POSTs it, applies the answer, and records
every decoded video frame (BGR, with its RTP-derived pts), the audio samples received, and the
data channel's events. `SpeechTrack` is a microphone: a clip at 48 kHz paced in real time, then
silence, as a live microphone keeps sending.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["MIC_RATE", "ClientPeer", "SpeechTrack", "Received"]

MIC_RATE = 48_000
CHUNK = MIC_RATE // 50  # 20 ms, as browsers send


class SpeechTrack(MediaStreamTrack):
    """`speech` (float32 mono at 48 kHz) after `lead_s` of silence, paced at real time, then silence."""

    kind = "audio"

    def __init__(self, speech: np.ndarray, lead_s: float = 0.5) -> None:
        super().__init__()
        lead = np.zeros(int(lead_s * MIC_RATE), np.float32)
        self.pcm = (np.clip(np.concatenate([lead, speech]), -1, 1) * 32767).astype("<i2")
        self.sent = 0
        self.start: float | None = None
        self.speech_starts_s = lead_s

    def say(self, speech: np.ndarray) -> None:
        """Speak `speech` next (from the chunk after the current one)."""
        more = (np.clip(speech, -1, 1) * 32767).astype("<i2")
        self.pcm = np.concatenate([self.pcm[:self.sent], more])

    def hush(self) -> None:
        """Silence from the next chunk on."""
        self.say(np.zeros(0, np.float32))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.sent / MIC_RATE - time.monotonic()))
        chunk = self.pcm[self.sent:self.sent + CHUNK]
        chunk = np.concatenate([chunk, np.zeros(CHUNK - len(chunk), "<i2")])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = MIC_RATE, self.sent, fractions.Fraction(1, MIC_RATE)
        self.sent += CHUNK
        return frame


@dataclass
class Received:
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (pts s, BGR), in arrival order
    arrivals: list[float] = field(default_factory=list)  # monotonic s of each video frame
    audio: list[np.ndarray] = field(default_factory=list)  # mono float32 at 48 kHz
    events: list[dict[str, Any]] = field(default_factory=list)

    def audio_samples(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)


class ClientPeer:
    """One peer connection to the server: a feeder (with `mic`, and a data channel) or a viewer."""

    def __init__(self, *, mic: MediaStreamTrack | None = None, feeder: bool = True, keep_frames: bool = True,
                 ice_servers: list[RTCIceServer] | None = None, relay_only: bool = False) -> None:
        config = RTCConfiguration(iceServers=ice_servers or [])
        if relay_only:
            from aiortc.rtcconfiguration import RTCIceTransportPolicy
            config.iceTransportPolicy = RTCIceTransportPolicy.RELAY
        self.pc = RTCPeerConnection(config)
        self.got = Received()
        self.keep_frames = keep_frames
        self.location: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTransceiver("video", direction="recvonly")
        if mic is not None:
            self.pc.addTransceiver(mic, direction="sendrecv")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("control") if feeder else None
        if self.channel is not None:
            @self.channel.on("message")
            def _message(message: str) -> None:
                self.got.events.append(json.loads(message))

        @self.pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, client: httpx.AsyncClient, path: str, **kw: Any) -> httpx.Response:
        """POST the offer to `path`; on 201, apply the answer. Returns the response either way."""
        r = await client.post(path, content=await self.offer(), headers={"Content-Type": "application/sdp"}, **kw)
        if r.status_code == 201:
            self.location = r.headers["location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return r

    def send(self, body: dict[str, Any]) -> None:
        assert self.channel is not None
        self.channel.send(json.dumps(body))

    async def wait_for(self, predicate: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the condition did not come true in time")
            await asyncio.sleep(0.02)

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    assert isinstance(frame, av.VideoFrame)
                    self.got.arrivals.append(time.monotonic())
                    pts = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    self.got.frames.append((pts, frame.to_ndarray(format="bgr24") if self.keep_frames else None))
                else:
                    assert isinstance(frame, av.AudioFrame)
                    x = frame.to_ndarray().astype(np.float32) / 32768
                    channels = len(frame.layout.channels)
                    self.got.audio.append(x.reshape(-1, channels).mean(axis=1) if frame.format.is_packed
                                          else x.mean(axis=0))
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def offer_sdp(*, feeder: bool = True) -> str:
    """An offer as a client makes it (a feeder: microphone up, a data channel; a viewer: both recvonly),
    from a connection closed at once: for requests whose answer, not media, is the point."""
    async def make() -> str:
        mic = SpeechTrack(np.zeros(0, np.float32)) if feeder else None
        peer = ClientPeer(mic=mic, feeder=feeder)
        try:
            return await peer.offer()
        finally:
            await peer.close()

    return asyncio.run(make())
