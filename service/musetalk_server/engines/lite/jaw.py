"""The background's jaw follows the mouth pasted into it.

The pasted region (compose.py) covers the lips and the middle of the chin, and ends inside both
jaw lines on the sides of the face, so the jaw line beside it and the neck under it are the
background frame's. Where the background's mouth is open and the pasted one shut (or the other
way round), the chin then sits at the pasted height while the jaw's sides and the shadow under
the chin stay where the background's mouth put them: the chin line shows twice, and a landmark
fitter that fits the whole jaw (dlib's 68 points) reads the mouth between the two.

The mandible carries the chin and the lower lip together. So before the paste, the background's
lower face is warped for its jaw line to land on the pasted frame's, down the face's own axis:
the chin by the whole difference, the jaw's angle by its share of the chin's depth under the
mouth line, what is level with the mouth (the ears) not at all, since the mandible turns about
the ear. In each column across the face the warp is piecewise linear: from the mouth line to the
jaw line the face stretches (or shrinks) evenly, and under the jaw the neck gives way over
NECK_REACH. Being piecewise linear, it is inverted exactly, and it cannot fold: the face's
stretch is bounded per column, read along the jaw, and the shift is smaller than the reach.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...face.landmarks import JAW, interocular
from .geometry import mouth_axes

__all__ = ["follow_jaw", "JawWarp"]

NECK_REACH = 0.2  # inter-ocular units under the jaw over which the shift fades out
MAX_SHIFT = 0.15  # the jaw moves at most this far (under NECK_REACH, so the neck cannot fold)
MAX_SHRINK = 0.5  # ... and the face between the mouth and the jaw keeps at least half its height
# Jaws closer than this everywhere are left alone (1-2 px on a 512² close-up, where a render's
# median difference is 0.03-0.04; skipping saves the resampling on 10-20 % of the frames).
MIN_SHIFT = 0.01
# The map is computed every _MAP_STEP px and scaled up: it is linear between the mouth line, the
# jaw line and the neck's end, so only the pixels beside those lines differ from the exact map's,
# by a fraction of a pixel (40 pastes on lp_d11: at most 4 grey levels on the median paste, 13 on
# the worst). Every 2 px it is 2 and 8, and costs twice as much.
_MAP_STEP = 4
_JAW = list(JAW)


class JawWarp:
    """One background's jaw moved onto another jaw, in mouth coordinates (u across the face along
    the mouth corners, v down it from the mouth line)."""

    def __init__(self, jaw_u: np.ndarray, jaw_v: np.ndarray, stretch: np.ndarray, reach: float):
        self.jaw_u, self.jaw_v, self.stretch, self.reach = jaw_u, jaw_v, stretch, reach

    def _column(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(jaw line depth, shift of the jaw line) at columns u; no shift beyond the jaw's ends."""
        line = np.maximum(np.interp(u, self.jaw_u, self.jaw_v), 1.0)
        return line, np.interp(u, self.jaw_u, self.stretch, left=0.0, right=0.0) * line

    def forward(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Where the background's point at (u, v) lands (its new v)."""
        line, shift = self._column(u)
        face = v * (line + shift) / line
        neck = v + shift * (1.0 - (v - line) / self.reach)
        return np.where(v <= 0, v, np.where(v <= line, face, np.where(v <= line + self.reach, neck, v)))

    def inverse(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Which background v shows at output (u, v): forward's exact inverse."""
        line, shift = self._column(u)
        face = v * line / (line + shift)
        neck = line + (v - line - shift) * self.reach / (self.reach - shift)
        return np.where(v <= 0, v, np.where(v <= line + shift, face, np.where(v <= line + self.reach, neck, v)))


def follow_jaw(frame: np.ndarray, points: np.ndarray, jaw_to: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """Write `frame` into `out` (same shape) with its jaw line moved onto `jaw_to` ((len(JAW), 2),
    in `frame`'s pixels: the pasted frame's jaw in this head's pose), and return `points` moved
    with it. Only the box from the mouth line to under the jaw is resampled."""
    np.copyto(out, frame)
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = mouth_axes(points)
    rel = points[_JAW] - centre
    jaw_u, jaw_v = rel @ ex, rel @ ey
    chin_v = float(jaw_v.max())
    if chin_v < 1.0:
        return points.astype(np.float32)
    # The face's stretch between the mouth line and the jaw, per jaw vertex: its difference over
    # the chin's depth, so the chin moves by the whole difference, a vertex higher up the jaw by
    # its share of the chin's depth (landmarks on the jaw's sides are the least sure), the ears,
    # level with the mouth, not at all; bounded so that nothing folds.
    limit = min(MAX_SHIFT * iod / chin_v, MAX_SHRINK)
    stretch = np.where(jaw_v > 0, np.clip(((jaw_to - centre) @ ey - jaw_v) / chin_v, -limit, limit), 0.0)
    if np.abs(stretch * np.maximum(jaw_v, 0.0)).max() < MIN_SHIFT * iod:
        return points.astype(np.float32)
    order = np.argsort(jaw_u)
    warp = JawWarp(jaw_u[order], jaw_v[order], stretch[order], NECK_REACH * iod)
    # The box: the jaw's width, from the mouth line to the neck's end (which does not move).
    h, w = frame.shape[:2]
    bottom = chin_v + warp.reach
    corners = np.array([centre + su * ex + sv * ey for su in (jaw_u.min(), jaw_u.max()) for sv in (0.0, bottom)])
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return points.astype(np.float32)
    out[y0:y1, x0:x1] = _remapped(frame, warp, centre, ex, ey, (x0, y0, x1, y1))
    rel = points - centre
    pu, pv = rel @ ex, rel @ ey
    return (centre + pu[:, None] * ex + warp.forward(pu, pv)[:, None] * ey).astype(np.float32)


def _remapped(frame: np.ndarray, warp: JawWarp, centre: np.ndarray, ex: np.ndarray, ey: np.ndarray,
              box: tuple[int, int, int, int]) -> np.ndarray:
    """The box (x0, y0, x1, y1) of the warped frame: each output pixel reads the background where
    `warp.inverse` says, the map computed on a coarse grid and scaled up. A coarse sample sits at
    the centre of the _MAP_STEP pixels it stands for, as cv2.resize reads it, and the grid
    reaches one sample past the box on every side, so no pixel of the box lies where cv2.resize
    would clamp instead of interpolating."""
    x0, y0, x1, y1 = box
    cols, rows = -(-(x1 - x0) // _MAP_STEP) + 2, -(-(y1 - y0) // _MAP_STEP) + 2
    first = (_MAP_STEP - 1) / 2 - _MAP_STEP
    px = x0 + first + _MAP_STEP * np.arange(cols, dtype=np.float64)
    py = (y0 + first + _MAP_STEP * np.arange(rows, dtype=np.float64))[:, None]
    gx, gy = px - centre[0], py - centre[1]
    u, v = gx * ex[0] + gy * ex[1], gx * ey[0] + gy * ey[1]
    up = v - warp.inverse(u, v)  # how far up the face each output pixel reads from
    size = (cols * _MAP_STEP, rows * _MAP_STEP)
    inside = (slice(_MAP_STEP, _MAP_STEP + y1 - y0), slice(_MAP_STEP, _MAP_STEP + x1 - x0))
    map_x = cv2.resize((px - up * ey[0]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[inside]
    map_y = cv2.resize((py - up * ey[1]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[inside]
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
