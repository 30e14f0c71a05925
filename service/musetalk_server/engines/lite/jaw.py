"""The background's jaw follows the mouth pasted into it.

The pasted region (compose.py) covers the lips and the middle of the chin, and ends inside both
jaw lines on the sides of the face, so the jaw line beside it and the neck under it are the
background frame's. Where the background's mouth is open and the pasted one shut (or the other
way round), the chin then sits at the pasted height while the jaw's sides and the shadow under
the chin stay where the background's mouth put them: the chin line shows twice, and a landmark
fitter that fits the whole jaw (dlib's 68 points) reads the mouth between the two.

The mandible carries the chin and the lower lip together. So before the paste, the background's
lower face is warped for its jaw line to lie on the pasted frame's: the chin by the whole
difference, the jaw's angle by part of it, the ears not at all; between the mouth and the jaw the
shift grows from nothing, and under the jaw the neck gives way over NECK_REACH.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...face.landmarks import JAW, interocular
from .geometry import mouth_axes

__all__ = ["follow_jaw"]

NECK_REACH = 0.2  # inter-ocular units under the jaw over which the shift fades out
MAX_SHIFT = 0.15  # the jaw moves at most this far (under NECK_REACH, so nothing folds)
# Jaws closer than this everywhere are left alone (1-2 px on a 512² close-up, where a render's
# median difference is 0.03-0.04; skipping saves the resampling on 10-20 % of the frames).
MIN_SHIFT = 0.01
INVERSE_STEPS = 4  # fixed-point steps that move the landmarks with the warp
_MAP_STEP = 4  # the shift is smooth: computed every 4 px, then scaled up
_JAW = list(JAW)


def follow_jaw(frame: np.ndarray, points: np.ndarray, jaw_to: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """Write `frame` into `out` (same shape) with its jaw line moved onto `jaw_to` ((len(JAW), 2),
    in `frame`'s pixels: the pasted frame's jaw in this head's pose), and return `points` moved
    with it. Only the box from the mouth's corners to under the jaw is resampled."""
    np.copyto(out, frame)
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = mouth_axes(points)
    rel = points[_JAW] - centre
    jaw_u, jaw_v = rel @ ex, rel @ ey
    chin_v = float(jaw_v.max())
    if chin_v < 1.0:
        return points.astype(np.float32)
    # How far each jaw vertex moves down the face: the chin the whole difference, the jaw's angle
    # by its share of the chin's depth under the mouth line, what is level with the mouth (the
    # ears) not at all: the mandible turns about the ear.
    carried = np.clip(jaw_v / chin_v, 0.0, 1.0)
    drop = np.clip(((jaw_to - centre) @ ey - jaw_v) * carried, -MAX_SHIFT * iod, MAX_SHIFT * iod)
    if np.abs(drop).max() < MIN_SHIFT * iod:
        return points.astype(np.float32)
    order = np.argsort(jaw_u)
    jaw_u, jaw_v, drop = jaw_u[order], jaw_v[order], drop[order]
    reach = NECK_REACH * iod

    def shift(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Downward shift at mouth coordinates (u, v): from 0 at the mouth line to the jaw's own
        drop at the jaw line, fading out under it. d(shift)/dv < 1: no fold."""
        d = np.interp(u, jaw_u, drop, left=0.0, right=0.0)
        line = np.maximum(np.interp(u, jaw_u, jaw_v), 1.0)
        return d * np.where(v <= line, np.clip(v / line, 0.0, 1.0), np.clip(1 - (v - line) / reach, 0.0, 1.0))

    # The box: the jaw's width, from the mouth line to the neck under the lowest chin.
    h, w = frame.shape[:2]
    bottom = chin_v + float(np.abs(drop).max()) + reach
    corners = np.array([centre + su * ex + sv * ey for su in (jaw_u[0], jaw_u[-1]) for sv in (0.0, bottom)])
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return points.astype(np.float32)
    # Where each output pixel reads from (`shift` further up the face), on a coarse grid: the shift
    # is smooth, and linear in between, so scaling the grid up gives the full map. A coarse sample
    # sits at the centre of the _MAP_STEP pixels it stands for, as cv2.resize reads it, and the
    # grid reaches one sample past the box on every side, so no pixel of the box lies where
    # cv2.resize would clamp instead of interpolating.
    cols, rows = -(-(x1 - x0) // _MAP_STEP) + 2, -(-(y1 - y0) // _MAP_STEP) + 2
    first = (_MAP_STEP - 1) / 2 - _MAP_STEP
    px = x0 + first + _MAP_STEP * np.arange(cols, dtype=np.float64)
    py = (y0 + first + _MAP_STEP * np.arange(rows, dtype=np.float64))[:, None]
    gx, gy = px - centre[0], py - centre[1]
    down = shift(gx * ex[0] + gy * ex[1], gx * ey[0] + gy * ey[1])
    size = (cols * _MAP_STEP, rows * _MAP_STEP)
    box = (slice(_MAP_STEP, _MAP_STEP + y1 - y0), slice(_MAP_STEP, _MAP_STEP + x1 - x0))
    map_x = cv2.resize((px - down * ey[0]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[box]
    map_y = cv2.resize((py - down * ey[1]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[box]
    out[y0:y1, x0:x1] = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The landmarks under the mouth line move with it: solve v_out = v + shift(v_out).
    rel = points - centre
    pu, pv = rel @ ex, rel @ ey
    under = np.flatnonzero(pv > 0)
    u, v = pu[under], pv[under]
    moved_v = v.copy()
    for _ in range(INVERSE_STEPS):
        moved_v = v + shift(u, moved_v)
    points[under] += (moved_v - v)[:, None] * ey
    return points.astype(np.float32)
