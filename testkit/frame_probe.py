"""A stand-in mouth reader for tests of the benchmarks' plumbing: any change to a frame shows.

It has dlib's reader's shape (`apertures(frames)`, bench/dlib_mouth.py) but needs no model, so a
test can check that two render paths give the same frames without the `eval` extra installed.
"""

from __future__ import annotations

import numpy as np


class MeanLevel:
    """Each frame's mean level: equal for equal frames, and moved by any repainted mouth."""

    def apertures(self, frames: list[np.ndarray]) -> np.ndarray:
        return np.array([float(np.mean(frame, dtype=np.float64)) for frame in frames])
