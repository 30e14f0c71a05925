"""mono_pcm16: interleaved PCM16 channels mixed down to the mono the real-time session takes."""

from __future__ import annotations

import struct

import pytest

from musetalk_client import mono_pcm16


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_mono_is_returned_as_it_is():
    data = pcm(1, -2, 3)
    assert mono_pcm16(data, 1) is data


def test_each_sample_is_the_mean_of_its_channels_rounded_half_to_even():
    stereo = pcm(100, 200, -32768, 32767, 1, 2, 3, 4, 7, 0)
    assert mono_pcm16(stereo, 2) == pcm(150, 0, 2, 4, 4)  # -0.5 -> 0, 1.5 -> 2, 3.5 -> 4
    assert mono_pcm16(pcm(3, 3, 3, -3, -3, -4), 3) == pcm(3, -3)


def test_a_partial_sample_frame_at_the_end_is_dropped():
    assert mono_pcm16(pcm(10, 20, 30) + b"\x01", 2) == pcm(15)


def test_no_channels_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        mono_pcm16(b"", 0)
