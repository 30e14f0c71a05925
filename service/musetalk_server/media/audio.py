"""Audio decode: any container and codec FFmpeg knows, out as float32 mono at a fixed rate.

Resampling and down-mixing are FFmpeg's (libswresample through PyAV), not hand-rolled.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..errors import EmptyMedia, TooLarge, UnsupportedMedia
from .errors import ffmpeg_reason
from .timeline import SAMPLE_RATE

__all__ = ["decode_audio", "soundtrack"]


def decode_audio(path: Path, *, rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream of `path` to (S,) float32 mono in [-1, 1] at `rate` Hz.

    Raises UnsupportedMedia when the file is not decodable audio or holds no samples, and
    TooLarge when it runs past `max_seconds`.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise UnsupportedMedia(f"not a decodable audio file ({ffmpeg_reason(e)})") from e
    with container:
        if not container.streams.audio:
            raise UnsupportedMedia("the file has no audio stream")
        limit = None if max_seconds is None else int(max_seconds * rate)
        chunks = _decode_chunks(container, rate, limit)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise EmptyMedia("the audio is empty (0 samples)")
    return np.clip(audio, -1.0, 1.0)


def _decode_chunks(container: av.container.InputContainer, rate: int, limit: int | None) -> list[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                total += chunks[-1].size
            if limit is not None and total > limit:
                raise TooLarge(f"audio is longer than the limit of {limit / rate:.0f} s")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        if not chunks:
            raise UnsupportedMedia(f"audio could not be decoded ({ffmpeg_reason(e)})") from e
        # A damaged tail after good audio: keep what decoded, as players do.
    return chunks


def soundtrack(path: Path, seconds: float, *, rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """The first `seconds` of `path`'s audio as (S,) float32 mono, or None when it has none.

    For a video's own soundtrack, where no audio is normal (a still, a silent clip) and not an
    error; a damaged or empty track counts as none too.
    """
    try:
        audio = decode_audio(path, rate=rate)
    except (UnsupportedMedia, EmptyMedia):
        return None
    return audio[: round(seconds * rate)]
