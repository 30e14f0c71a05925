"""A real-time session's frame (JPEG + PCM16) as LiveKit's own `rtc` frame types."""

from __future__ import annotations

import av
from livekit import rtc

__all__ = ["JpegDecoder", "pcm_frame"]

PCM_BYTES = 2  # mono PCM16


class JpegDecoder:
    """JPEG bytes to an RGBA `rtc.VideoFrame`, through PyAV (a livekit-agents dependency).

    One decoder per session: it is not thread-safe, and the generator decodes one frame at a time.
    """

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("mjpeg", "r")

    def decode(self, jpeg: bytes) -> rtc.VideoFrame:
        (picture,) = self._codec.decode(av.Packet(jpeg))
        rgba = picture.to_ndarray(format="rgba")  # (H, W, 4), packed rows
        return rtc.VideoFrame(picture.width, picture.height, rtc.VideoBufferType.RGBA, rgba.tobytes())


def pcm_frame(pcm16: bytes, sample_rate: int) -> rtc.AudioFrame:
    """Mono PCM16 bytes as an `rtc.AudioFrame`."""
    return rtc.AudioFrame(pcm16, sample_rate, 1, len(pcm16) // PCM_BYTES)
