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

from .audio import PCM16_SCALE

__all__ = ["AUDIO_RATE", "Mp4Writer", "bgr_to_i420"]

AUDIO_RATE = 48_000  # Hz; the muxed track is re-decoded from the upload at this rate, not upsampled from 16 kHz
_AAC_FRAME = 1024  # samples per AAC frame
_AUDIO_BITRATE = {"mono": 128_000, "stereo": 192_000}
# x264 splits each frame into one slice per thread, and by default takes its thread count from the
# CPUs the encoding thread may run on: the same frames then encode differently (most visibly in
# the lower slices) on another machine, under another CPU limit or affinity. A fixed count makes
# identical requests give identical files everywhere.
ENCODER_THREADS = 4
# FFmpeg's colour tags (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic).
_BT601, _LIMITED, _BT709 = 6, 1, 1  # SMPTE 170M (the BT.601 matrix), MPEG range, BT.709 primaries / transfer


class Mp4Writer:
    """Write BGR frames and one track, (S,) mono or (C, S) with C = 1 or 2, float32 or int16, to an MP4 file."""

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
        self._samples = np.atleast_2d(audio)  # (C, S), float32 or int16 (to_pcm16)
        self._layout = "stereo" if self._samples.shape[0] == 2 else "mono"
        self._audio = self._out.add_stream("aac", rate=audio_rate, layout=self._layout)
        self._audio.bit_rate = _AUDIO_BITRATE[self._layout]
        self._audio_rate = audio_rate
        self._fps = float(rate)
        self._audio_pos = 0
        self._frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        h, w = self._video.height, self._video.width
        frame = av.VideoFrame.from_ndarray(bgr_to_i420(np.ascontiguousarray(frame_bgr[:h, :w])), format="yuv420p")
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
        length = self._samples.shape[1]
        end = length if seconds is None else min(length, int(seconds * self._audio_rate))
        while self._audio_pos < end:
            chunk = np.ascontiguousarray(self._samples[:, self._audio_pos : self._audio_pos + _AAC_FRAME], np.float32)
            if self._samples.dtype == np.int16:
                chunk /= PCM16_SCALE
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
            frame.sample_rate = self._audio_rate
            frame.pts = self._audio_pos
            self._audio_pos += chunk.shape[1]
            self._out.mux(self._audio.encode(frame))


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """An even-sized BGR picture as yuv420p planes (PyAV's one-array layout): BT.601, limited range,
    rounded to nearest, each 2x2 block's chroma from its average colour, as JPEG's is.

    FFmpeg's default conversion truncates: greys came out green (chroma 127) and every frame 1.5-2
    levels darker than its MJPEG twin. OpenCV's rounds right but takes a block's chroma from one of
    its pixels, so a thin coloured edge would alias: its luma is kept, its chroma made here."""
    yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8)
    h, w = image.shape[:2]
    block = cv2.resize(image.astype(np.float32), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    b, g, r = cv2.split(block)
    for row, plane in ((h, 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b),  # Cb: 224/255 of the BT.601 row
                       (h + h // 4, 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b)):  # Cr
        yuv[row:row + h // 4] = np.clip(np.rint(plane), 0, 255).astype(np.uint8).reshape(h // 4, w)
    return yuv
