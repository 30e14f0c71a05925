"""A session's frames to every WebRTC peer that watches it, encoded once per codec.

`Broadcast` is a frame sink of the session (render/realtime/session.py: `attach`). Each frame
it gets, as I420 planes with its share of the audio, is encoded on the broadcast's own thread:
once by each codec some viewer takes (one H.264 encoder however many watch), and its audio once
to Opus. Every viewer's tracks then get the same `av.Packet`s, which aiortc's RTCRtpSender only
packetizes (it encodes only `av.Frame`s). A new viewer, and a PLI or FIR from any viewer, make
the next frame a key frame; a viewer's video starts at a key frame.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..render.realtime.timeline import Plan
from ..render.realtime.transport import I420, FrameFormat, OutputFrame
from .encoders import AUDIO_RATE, AudioEncoder, VideoEncoder, VideoOptions

__all__ = ["Broadcast", "PacketTrack", "Viewer"]

log = logging.getLogger(__name__)
_QUEUE_S = 2.0  # a viewer whose sender falls this far behind loses packets (and restarts at a key frame)


class PacketTrack(MediaStreamTrack):
    """One viewer's video or audio: encoded packets, handed to aiortc's sender as they come."""

    def __init__(self, kind: str, capacity: int, metrics: Any) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(capacity)
        self._metrics = metrics
        self.sent_bytes = 0

    def offer(self, packet: av.Packet) -> bool:
        """Queue a packet; False when the queue is full (the packet is dropped)."""
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """No more packets: the sender's next `recv` ends it."""
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def recv(self) -> av.Packet:  # aiortc's senders take packets as well as frames
        packet = await self._queue.get()
        if packet is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        self.sent_bytes += packet.size
        self._metrics.webrtc_bytes.labels(self.kind).inc(packet.size)
        return packet


class Viewer:
    """One peer's pair of tracks, and where its video stands."""

    def __init__(self, codec: str, fps: float, metrics: Any) -> None:
        self.codec = codec
        self.video = PacketTrack("video", max(2, round(_QUEUE_S * fps)), metrics)
        self.audio = PacketTrack("audio", round(_QUEUE_S * AUDIO_RATE / 960), metrics)
        self.needs_keyframe = True  # its decoder can start only at one
        self.frames = 0  # video packets queued for it

    def end(self) -> None:
        self.video.end()
        self.audio.end()


class Broadcast:
    """Encodes a session's frames once per codec and fans the packets out to its viewers."""

    def __init__(self, *, fps: float, options: VideoOptions, metrics: Any) -> None:
        self.fps, self.options, self.metrics = fps, options, metrics
        self.viewers: list[Viewer] = []
        self.video: dict[str, VideoEncoder] = {}  # touched only on the encode thread
        self.audio: AudioEncoder | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="webrtc-encode")
        self._keyframe = False
        self.closed = False

    # --- viewers (event loop) --------------------------------------------------------------

    def add(self, codec: str) -> Viewer:
        viewer = Viewer(codec, self.fps, self.metrics)
        self.viewers.append(viewer)
        self._keyframe = True  # its first frame, at once
        return viewer

    def remove(self, viewer: Viewer) -> None:
        viewer.end()
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        if not self.closed:
            self._thread.submit(self._keep, {v.codec for v in self.viewers})

    def request_keyframe(self) -> None:
        """A new viewer, or a viewer's PLI/FIR (aiortc's sender calls this: peer.py)."""
        self._keyframe = True

    async def close(self) -> None:
        """The session ended: every viewer's tracks end, and the encoders are gone when this returns."""
        if self.closed:
            return
        self.closed = True
        for viewer in self.viewers:
            viewer.end()
        self.viewers.clear()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._keep, set())  # after any encode
        self._thread.shutdown(wait=False)

    @property
    def wants(self) -> frozenset[FrameFormat]:
        """I420 planes while someone watches; nothing otherwise (a socket-fed session whose viewers all
        left makes JPEGs only again)."""
        return frozenset({I420}) if self.viewers and not self.closed else frozenset()

    @property
    def encoders(self) -> int:
        return len(self.video)

    # --- frames (the session's FrameSink) --------------------------------------------------

    async def send_frame(self, plan: Plan, frame: OutputFrame) -> None:
        if not self.viewers or self.closed:
            return
        assert frame.i420 is not None  # `wants` is I420
        codecs = {v.codec for v in self.viewers}
        keyframe, self._keyframe = self._keyframe, False
        loop = asyncio.get_running_loop()
        video, audio = await loop.run_in_executor(self._thread, self._encode, plan, frame.i420, codecs, keyframe)
        for viewer in list(self.viewers):
            self._deliver(viewer, video.get(viewer.codec, []), audio)

    def _deliver(self, viewer: Viewer, video: list[av.Packet], audio: list[av.Packet]) -> None:
        for packet in video:
            if viewer.needs_keyframe and not packet.is_keyframe:
                continue  # its decoder cannot start here; the key frame asked for is on its way
            if viewer.video.offer(packet):
                viewer.needs_keyframe = False
                viewer.frames += 1
            else:  # its sender is _QUEUE_S behind: drop, and restart it at a key frame
                viewer.needs_keyframe = True
                self._keyframe = True
        for packet in audio:
            viewer.audio.offer(packet)  # a full queue drops this 20 ms; video recovers the viewer

    # --- the encode thread -----------------------------------------------------------------

    def _encode(self, plan: Plan, i420: np.ndarray, codecs: set[str],
                keyframe: bool) -> tuple[dict[str, list[av.Packet]], list[av.Packet]]:
        self._keep(codecs)
        height, width = i420.shape[0] * 2 // 3, i420.shape[1]
        video = {}
        for codec in codecs:
            encoder = self.video.get(codec)
            if encoder is None:
                encoder = self.video[codec] = VideoEncoder(codec, width, height, self.fps, self.options)
                self.metrics.webrtc_encoders.labels(codec).inc()
                keyframe_here = True
            else:
                keyframe_here = keyframe
            before = (encoder.seconds, encoder.keyframes)
            video[codec] = encoder.encode(i420, plan.index, keyframe_here)
            self.metrics.webrtc_encode_seconds.labels(codec).observe(encoder.seconds - before[0])
            self.metrics.webrtc_keyframes.inc(encoder.keyframes - before[1])
        if self.audio is None:  # the session's 48 kHz timeline starts at its frame 0
            self.audio = AudioEncoder(round(plan.index * AUDIO_RATE / self.fps))
        return video, self.audio.encode(plan.audio, plan.rate)

    def _keep(self, codecs: set[str]) -> None:
        """Close the encoders no viewer takes any more (and the audio one with the last viewer)."""
        for codec in [c for c in self.video if c not in codecs]:
            self.video.pop(codec).close()
            self.metrics.webrtc_encoders.labels(codec).dec()
        if not codecs and self.audio is not None:
            self.audio.close()
            self.audio = None
