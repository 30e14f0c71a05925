"""Streaming resampling of client audio to the engines' 16 kHz, the same however it is chunked."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ...media.frame_timing import SAMPLE_RATE

__all__ = ["StreamResampler"]


class StreamResampler:
    """Linear interpolation from `rate` to 16 kHz; output sample k sits at input k x rate / 16000.

    Each output sample depends only on its two input neighbours, so chunk boundaries change
    nothing and the delay is one input sample. Linear interpolation is enough for the mouth
    shapes and whisper features, which read the 0.1-4 kHz band.
    """

    def __init__(self, rate: int) -> None:
        self.step = Fraction(rate, SAMPLE_RATE)
        self.identity = rate == SAMPLE_RATE
        self._tail = np.zeros(0, np.float32)  # input samples still needed
        self._tail_start = 0  # absolute input index of _tail[0]
        self._next = 0  # next output index

    def push(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """16 kHz samples that `samples` completes; `final` flushes the last ones."""
        if self.identity:
            return samples
        buf = np.concatenate([self._tail, samples])
        end = self._tail_start + len(buf)  # input samples seen so far
        # Output k needs input floor(k x step) + 1, except at the very end (then its own sample).
        limit = end if final else end - 1
        stop = max(self._next, math.ceil(limit / self.step)) if limit > 0 else self._next
        k = np.arange(self._next, stop, dtype=np.int64)
        pos = k * self.step.numerator
        i0 = pos // self.step.denominator
        frac = (pos % self.step.denominator).astype(np.float32) / self.step.denominator
        lo = buf[i0 - self._tail_start]
        hi = buf[np.minimum(i0 + 1, end - 1) - self._tail_start]
        out = (lo * (1 - frac) + hi * frac).astype(np.float32)
        self._next = stop
        keep = min(int(stop * self.step), end)  # floor: the first input a later output reads
        self._tail = buf[keep - self._tail_start:]
        self._tail_start = keep
        return out
