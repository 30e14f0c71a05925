"""Audio decode: any container and codec FFmpeg knows, out as float32 at a fixed rate: mono for the
engines, or mono and stereo kept apart for an MP4's soundtrack.

Resampling and down-mixing are FFmpeg's (libswresample through PyAV), not hand-rolled.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..errors import EmptyMedia, InvalidSamples, TooLarge, UnsupportedMedia
from .frame_timing import SAMPLE_RATE
from .probe import declared_seconds, ffmpeg_reason, over_declared_limit

__all__ = ["PCM16_SCALE", "decode_audio", "soundtrack", "check_finite", "to_pcm16"]

PCM16_SCALE = 32768.0  # a PCM16 sample over this is a float sample in [-1, 1)


def check_finite(samples: np.ndarray, *, start: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return `samples` ((S,) or (C, S)) unchanged, or raise InvalidSamples if any is NaN or infinite.

    Float WAVs can carry such values; clipping would hide NaN and the AAC encoder fails on it,
    so decoders call this on every chunk, and so must any caller that gets samples another way
    (a real-time socket). `start` is the first sample's offset, for the message.
    """
    finite = np.isfinite(samples)
    if finite.all():
        return samples
    first = int(np.flatnonzero(~finite.reshape(-1, finite.shape[-1]).all(axis=0))[0])  # (S,) or (C, S)
    # Not told apart: a resampler's filter turns an infinity into NaN among its neighbours.
    raise InvalidSamples(
        f"the audio holds non-finite sample values (NaN or infinity), first at {(start + first) / rate:.3f} s; "
        "re-export it as ordinary PCM"
    )


def decode_audio(path: Path, *, rate: int = SAMPLE_RATE, max_seconds: float | None = None,
                 keep_stereo: bool = False) -> np.ndarray:
    """Decode the first audio stream of `path` to (S,) float32 mono in [-1, 1] at `rate` Hz.

    With `keep_stereo`, (C, S) instead: C = 1 for a mono stream, else 2 (FFmpeg mixes more
    channels down to stereo), so a soundtrack played back sounds as it was given.

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
        declared = declared_seconds(container, container.streams.audio[0])
        if max_seconds is not None and over_declared_limit(declared, max_seconds):
            # Refused from the header alone: a 6-hour WAV is never decoded.
            raise TooLarge(f"audio declares {declared:.0f} s; the limit is {max_seconds:.0f} s")
        limit = None if max_seconds is None else int(max_seconds * rate)
        stereo = keep_stereo and (container.streams.audio[0].channels or 1) > 1
        chunks = _decode_chunks(container, rate, limit, "stereo" if stereo else "mono")
    audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    if audio.size == 0:
        raise EmptyMedia("the audio is empty (0 samples)")
    return np.clip(audio if keep_stereo else audio[0], -1.0, 1.0)


def _decode_chunks(container: av.container.InputContainer, rate: int, limit: int | None, layout: str) -> list[np.ndarray]:
    """(C, n) chunks, one row per channel of `layout`."""
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(check_finite(out.to_ndarray(), start=total, rate=rate))
                total += chunks[-1].shape[1]
            if limit is not None and total > limit:  # stop here, however long the file says it is
                raise TooLarge(f"audio is longer than the limit of {limit / rate:.0f} s")
        for out in resampler.resample(None):
            chunks.append(check_finite(out.to_ndarray(), start=total, rate=rate))
    except av.FFmpegError as e:
        if not chunks:
            raise UnsupportedMedia(f"audio could not be decoded ({ffmpeg_reason(e)})") from e
        # A damaged tail after good audio: keep what decoded, as players do.
    return chunks


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, any shape: half the memory of float32 for audio that
    only waits to be encoded (an MP4's soundtrack, an async job's held for minutes)."""
    return np.clip(np.round(samples * PCM16_SCALE), -32768, 32767).astype(np.int16)


def soundtrack(path: Path, seconds: float, *, start_s: float = 0.0, rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """`seconds` of `path`'s audio from presentation time `start_s`, as (S,) float32 mono, or None
    when it has none.

    For a video's own soundtrack, where no audio is normal (a still, a silent clip) and not an
    error; a damaged or empty track counts as none too. `start_s` is the first video frame's time
    (VideoClip.start_s): sample 0 is what plays while frame 0 is shown. Audio that starts later
    than the video is padded with silence in front, so the two stay on one clock.
    """
    try:
        audio = decode_audio(path, rate=rate)
        offset = round((start_s - _audio_start_s(path)) * rate)
    except (UnsupportedMedia, EmptyMedia):
        return None
    if offset < 0:
        audio = np.concatenate([np.zeros(-offset, np.float32), audio])
    return audio[max(offset, 0):][: round(seconds * rate)]


def _audio_start_s(path: Path) -> float:
    """Presentation time of the first audio sample: the stream's start, 0 when it does not say."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.start_time is None or stream.time_base is None:
            return 0.0
        return float(stream.start_time * stream.time_base)
