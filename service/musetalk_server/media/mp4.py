"""MP4 sink: H.264 yuv420p video plus AAC audio, muxed in one pass by PyAV (no ffmpeg process).

Frames arrive one by one from the engine; audio is interleaved as the video advances so the
file stays well ordered without a second pass.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["AUDIO_RATE", "Mp4Writer"]

AUDIO_RATE = 48_000  # Hz; the muxed track is re-decoded from the upload at this rate, not upsampled from 16 kHz
_AAC_FRAME = 1024  # samples per AAC frame
_AUDIO_BITRATE = 128_000
# x264 splits each frame into one slice per thread, and by default takes its thread count from the
# CPUs the encoding thread may run on: the same frames then encode differently (most visibly in
# the lower slices) on another machine, under another CPU limit or affinity. A fixed count makes
# identical requests give identical files everywhere.
ENCODER_THREADS = 4
# FFmpeg's colour tags (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic).
_BT601, _LIMITED, _BT709 = 6, 1, 1  # SMPTE 170M (the BT.601 matrix), MPEG range, BT.709 primaries / transfer


class Mp4Writer:
    """Write BGR frames and one mono float32 track to an MP4 file."""

    def __init__(self, path: Path, *, fps: float, width: int, height: int, audio: np.ndarray, audio_rate: int) -> None:
        self._out = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._video = self._out.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = width - width % 2, height - height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"preset": "veryfast", "crf": "20"}
        # Tagged as converted (write): BT.601 matrix, limited range, sRGB's BT.709 primaries. Untagged,
        # a player guesses, and some guess BT.709's matrix for HD sizes.
        context = self._video.codec_context
        context.colorspace, context.color_range = _BT601, _LIMITED
        context.color_primaries, context.color_trc = _BT709, _BT709
        self._video.codec_context.thread_count = ENCODER_THREADS
        self._audio = self._out.add_stream("aac", rate=audio_rate, layout="mono")
        self._audio.bit_rate = _AUDIO_BITRATE
        self._samples = np.ascontiguousarray(audio, dtype=np.float32)
        self._audio_rate = audio_rate
        self._fps = float(rate)
        self._audio_pos = 0
        self._frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        h, w = self._video.height, self._video.width
        # OpenCV's BT.601 conversion rounds to nearest: neutral grey stays neutral and a frame keeps
        # its brightness (within 0.3 of a level). FFmpeg's default bgr24 -> yuv420p truncates: greys
        # came out green and every frame 1.5-2 levels darker than its MJPEG twin.
        yuv = np.asarray(cv2.cvtColor(np.ascontiguousarray(frame_bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.colorspace, frame.color_range = _BT601, _LIMITED
        frame.pts = self._frames
        self._out.mux(self._video.encode(frame))
        self._frames += 1
        self._write_audio_until(self._frames / self._fps)

    def close(self) -> None:
        """Flush both encoders; the audio track runs to its own end."""
        self._write_audio_until(None)
        self._out.mux(self._video.encode(None))
        self._out.mux(self._audio.encode(None))
        self._out.close()

    def abort(self) -> None:
        self._out.close()

    def _write_audio_until(self, seconds: float | None) -> None:
        end = self._samples.size if seconds is None else min(self._samples.size, int(seconds * self._audio_rate))
        while self._audio_pos < end:
            chunk = self._samples[self._audio_pos : self._audio_pos + _AAC_FRAME]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._audio_rate
            frame.pts = self._audio_pos
            self._audio_pos += chunk.size
            self._out.mux(self._audio.encode(frame))
