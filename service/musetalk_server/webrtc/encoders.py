"""The session's video and audio encoders (PyAV): I420 frames to H.264 or VP8, PCM16 to Opus.

One encoder per session and codec, whatever the number of viewers (broadcast.py sends every
viewer the same packets). Timestamps are the session's own clock: video frame g has pts g in
units of 1/fps, audio packet n covers samples [n x 960, (n + 1) x 960) of the session's 48 kHz
timeline, which starts at frame 0. aiortc turns both into RTP timestamps (90 kHz, 48 kHz), so
what the browser syncs to is when the session meant each frame and sample to play.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

__all__ = ["AUDIO_RATE", "H264", "OPUS_FRAME", "VP8", "AudioEncoder", "VideoEncoder", "VideoOptions", "frame_base"]

H264, VP8 = "H264", "VP8"
AUDIO_RATE = 48_000  # Opus's own rate; RTP's clock for it
OPUS_FRAME = AUDIO_RATE // 50  # 20 ms, the packet length browsers expect
_OPUS_KBPS = 48


@dataclass(frozen=True)
class VideoOptions:
    """How video is coded: quality-driven (a constant rate factor), capped by a peak rate."""

    crf: int  # x264's constant rate factor (VP8: the same number as its `crf`), lower is better
    max_kbps: int  # the VBV cap: no second of video exceeds it, so a viewer's link is never flooded
    keyframe_s: float  # a key frame at least this often, besides those asked for (new viewer, PLI/FIR)
    preset: str  # x264's speed preset


def frame_base(fps: float) -> Fraction:
    """The time base of frame indices: 1/fps, exact for 25 and NTSC's 30000/1001."""
    return 1 / Fraction(fps).limit_denominator(1001)


class VideoEncoder:
    """I420 frames of one size in, packets out: H.264 constrained baseline (libx264, zero-latency: no
    B-frames, no look-ahead, one packet per frame) or VP8 (libvpx, real-time deadline)."""

    def __init__(self, codec: str, width: int, height: int, fps: float, options: VideoOptions) -> None:
        self.codec_name, self.width, self.height = codec, width, height
        self.time_base = frame_base(fps)
        gop = max(1, round(options.keyframe_s * fps))
        rate = {"maxrate": f"{options.max_kbps}k", "bufsize": f"{options.max_kbps}k"}
        if codec == H264:
            self.ctx = av.CodecContext.create("libx264", "w")
            self.ctx.options = {"preset": options.preset, "tune": "zerolatency", "profile": "baseline",
                                "crf": str(options.crf), "forced-idr": "1", **rate}
        elif codec == VP8:
            self.ctx = av.CodecContext.create("libvpx", "w")
            self.ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                                "crf": str(options.crf), "error-resilient": "1", **rate}
            self.ctx.bit_rate = options.max_kbps * 1000
        else:
            raise ValueError(f"no encoder for {codec!r}")
        self.ctx.width, self.ctx.height, self.ctx.pix_fmt = width, height, "yuv420p"
        self.ctx.time_base = self.time_base
        self.ctx.framerate = 1 / self.time_base
        self.ctx.gop_size = gop
        self.ctx.thread_count = 1  # one core's share per session, predictable; sessions run in parallel
        self.frames = self.keyframes = 0
        self.seconds = 0.0  # CPU time spent encoding (thread time)

    def encode(self, i420: np.ndarray, index: int, keyframe: bool) -> list[av.Packet]:
        """Frame `index` (pts index/fps); `keyframe` forces an IDR (H.264) or key frame (VP8)."""
        t0 = time.thread_time()
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts, frame.time_base = index, self.time_base
        if keyframe:
            frame.pict_type = PictureType.I
        packets = list(self.ctx.encode(frame))
        for p in packets:
            p.time_base = self.time_base
            self.keyframes += p.is_keyframe
        self.frames += 1
        self.seconds += time.thread_time() - t0
        return packets

    def close(self) -> None:
        """Let libx264/libvpx go now (PyAV frees a codec context when its last reference does)."""
        del self.ctx


class AudioEncoder:
    """PCM16 mono at the session's rate in, 20 ms Opus packets out, timed on the session's clock."""

    def __init__(self, first_sample_48k: int) -> None:
        self.ctx = av.CodecContext.create("libopus", "w")
        self.ctx.sample_rate, self.ctx.layout, self.ctx.format = AUDIO_RATE, "mono", "s16"
        self.ctx.bit_rate = _OPUS_KBPS * 1000
        self.ctx.options = {"application": "voip"}
        self.ctx.time_base = Fraction(1, AUDIO_RATE)
        self.next_pts = first_sample_48k  # the 48 kHz sample the next packet starts at
        self._rate = 0
        self._resampler: av.AudioResampler | None = None

    def encode(self, pcm: bytes, rate: int) -> list[av.Packet]:
        if rate != self._rate:  # the first chunk, or a `config` changed the session's rate
            self._rate = rate
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE, frame_size=OPUS_FRAME)
        assert self._resampler is not None
        samples = np.frombuffer(pcm, "<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        packets: list[av.Packet] = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = None  # the encoder's own pts are not ours: ours come from the session clock
            for packet in self.ctx.encode(chunk):
                packet.pts, packet.time_base = self.next_pts, Fraction(1, AUDIO_RATE)
                self.next_pts += OPUS_FRAME
                packets.append(packet)
        return packets

    def close(self) -> None:
        del self.ctx
