"""Frame-count and cycle arithmetic shared by every engine and sink."""

from __future__ import annotations

import math

SAMPLE_RATE = 16_000  # Hz; every engine consumes 16 kHz mono float32


def frame_count(n_samples: int, fps: float) -> int:
    """Frames for `n_samples` of 16 kHz audio: floor(seconds x fps).

    The epsilon keeps exact products (e.g. 2.0 s x 25 fps) from flooring to one less
    because of binary rounding.
    """
    return max(0, math.floor(n_samples * fps / SAMPLE_RATE + 1e-9))


def pingpong_index(i: int, n: int) -> int:
    """Source frame for output frame `i` over an avatar of `n` frames: forward, then reversed.

    The cycle has length 2n, so each end frame shows twice in a row, as upstream's
    `frames + frames[::-1]` does; that keeps head motion continuous at the turns.
    """
    if n <= 0:
        raise ValueError("an avatar has at least one frame")
    k = i % (2 * n)
    return k if k < n else 2 * n - 1 - k
