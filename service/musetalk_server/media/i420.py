"""BGR frames to I420 planes, the picture video encoders take (H.264 and VP8 both code 4:2:0)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["even_size", "to_i420"]


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size an I420 frame of a (width, height) picture has: 4:2:0 needs even sides, so an odd
    last column or row is dropped."""
    return width - width % 2, height - height % 2


def to_i420(bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR -> (H' * 3 / 2, W') uint8: the Y plane, then U, then V (H', W' = even_size)."""
    h, w = bgr.shape[:2]
    ew, eh = even_size(w, h)
    return cv2.cvtColor(np.ascontiguousarray(bgr[:eh, :ew]), cv2.COLOR_BGR2YUV_I420)
