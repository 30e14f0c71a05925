"""PCM16 as the real-time session takes it: mono. A TTS service or a room may hand over stereo.

Standard library only, as the rest of the client: a 20 ms chunk is a few hundred samples.
"""

from __future__ import annotations

import sys
from array import array

__all__ = ["mono_pcm16"]


def mono_pcm16(pcm: bytes, channels: int) -> bytes:
    """Little-endian PCM16 of `channels` interleaved channels as mono: each sample the mean of
    its channels, rounded (half to even). A trailing partial sample frame is dropped."""
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if channels == 1:
        return pcm
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % (2 * channels)])
    if sys.byteorder == "big":
        samples.byteswap()
    per_channel = [samples[c::channels] for c in range(channels)]  # equally long: whole frames only
    mono = array("h", (round(sum(frame) / channels) for frame in zip(*per_channel, strict=True)))
    if sys.byteorder == "big":
        mono.byteswap()
    return mono.tobytes()
