"""The background's jaw follows the mouth pasted into it.

The pasted region (compose.py) covers the lips and the middle of the chin, and ends inside both
jaw lines on the sides of the face, so the jaw line beside it and the neck under it are the
background frame's. Where the background's mouth is open and the pasted one shut (or the other
way round), the chin then sits at the pasted height while the jaw's sides and the shadow under
the chin stay where the background's mouth put them: the chin line shows twice, and a landmark
fitter that fits the whole jaw (dlib's 68 points) reads the mouth between the two.

The mandible carries the chin and the lower lip together. So before the paste, the background's
lower face is warped, down the face's own axis, for each vertex of its jaw line to land on the
pasted frame's: the chin by the whole difference, the jaw's sides as far as a bound on the face's
stretch lets them, what is level with the mouth (the ears) not at all. In each column across
the face the warp is piecewise linear: from the mouth line to the jaw line the face stretches
(or shrinks) evenly, and under the jaw the neck gives way over NECK_REACH. Being piecewise linear
it is inverted exactly, and it cannot fold: the stretch is bounded, and the jaw's shift is
smaller than the reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...face.landmarks import JAW, interocular
from .geometry import mouth_axes

__all__ = ["follow_jaw", "jaw_warp", "JawWarp"]

NECK_REACH = 0.2  # inter-ocular units under the jaw over which the shift fades out
MAX_SHIFT = 0.15  # the jaw moves at most this far (under NECK_REACH, so the neck cannot fold)
MAX_STRETCH = 0.5  # ... and the face between the mouth and the jaw keeps 0.5-1.5 times its height
# Jaws closer than this everywhere are left alone (1-2 px on a 512² close-up, where a render's
# median difference is 0.03-0.04; skipping saves the resampling on 10-20 % of the frames).
MIN_SHIFT = 0.01
# The map is computed every _MAP_STEP px and scaled up. It is linear between the mouth line, the
# jaw line and the neck's end; beside those lines the scaled-up map is off by a fraction of a
# pixel, and by up to 3 px across a neck squeezed under a jaw dropped by nearly MAX_SHIFT (a
# narrow band the grid cannot follow: 0.05 inter-ocular units holding 0.2 of the filmed neck).
# Over 40 pastes on lp_d11 the picture is within 3 grey levels of the exact map's on the median
# paste and 10 on the worst; on lp_d12 5 and about 55, at the jaw's edge against the shirt.
_MAP_STEP = 4
_JAW = list(JAW)


@dataclass(frozen=True)
class JawWarp:
    """One background's jaw moved onto another jaw. Mouth coordinates: u across the face along
    the mouth corners, v down it from the mouth line, both from `centre` along `ex` and `ey`."""

    centre: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    jaw_u: np.ndarray  # the jaw's vertices, in u order
    jaw_v: np.ndarray
    stretch: np.ndarray  # the face's stretch above each vertex: the vertex moves by stretch * jaw_v
    reach: float  # px under the jaw over which the neck gives way

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

    def move(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) pixel points where the warp takes them."""
        rel = points.astype(np.float64) - self.centre
        u, v = rel @ self.ex, rel @ self.ey
        return (self.centre + u[:, None] * self.ex + self.forward(u, v)[:, None] * self.ey).astype(np.float32)

    def box(self, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1): every pixel the warp moves, within a frame of `shape`; None if none."""
        bottom = float(self.jaw_v.max()) + self.reach  # the neck's end, which does not move
        corners = np.array([self.centre + su * self.ex + sv * self.ey
                            for su in (self.jaw_u[0], self.jaw_u[-1]) for sv in (0.0, bottom)])
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (shape[1], shape[0]))
        return None if x1 - x0 < 2 or y1 - y0 < 2 else (int(x0), int(y0), int(x1), int(y1))

    def remapped(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The box (x0, y0, x1, y1) of the warped frame: each output pixel reads the background
        where `inverse` says, the map computed on a coarse grid and scaled up. A coarse sample
        sits at the centre of the _MAP_STEP pixels it stands for, as cv2.resize reads it, and the
        grid reaches one sample past the box on every side, so no pixel of the box lies where
        cv2.resize would clamp instead of interpolating."""
        x0, y0, x1, y1 = box
        cols, rows = -(-(x1 - x0) // _MAP_STEP) + 2, -(-(y1 - y0) // _MAP_STEP) + 2
        first = (_MAP_STEP - 1) / 2 - _MAP_STEP
        px = x0 + first + _MAP_STEP * np.arange(cols, dtype=np.float64)
        py = (y0 + first + _MAP_STEP * np.arange(rows, dtype=np.float64))[:, None]
        gx, gy = px - self.centre[0], py - self.centre[1]
        u, v = gx * self.ex[0] + gy * self.ex[1], gx * self.ey[0] + gy * self.ey[1]
        up = v - self.inverse(u, v)  # how far up the face each output pixel reads from
        size = (cols * _MAP_STEP, rows * _MAP_STEP)
        inside = (slice(_MAP_STEP, _MAP_STEP + y1 - y0), slice(_MAP_STEP, _MAP_STEP + x1 - x0))
        map_x = cv2.resize((px - up * self.ey[0]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[inside]
        map_y = cv2.resize((py - up * self.ey[1]).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[inside]
        return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def jaw_warp(points: np.ndarray, jaw_to: np.ndarray) -> JawWarp | None:
    """The warp that moves the jaw of a face with these landmarks onto `jaw_to` ((len(JAW), 2),
    in the same pixels), or None where the two jaws are closer than MIN_SHIFT everywhere."""
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = mouth_axes(points)
    rel = points[_JAW] - centre
    jaw_u, jaw_v = rel @ ex, rel @ ey
    chin_v = float(jaw_v.max())
    if chin_v < 1.0:
        return None
    # Each vertex under the mouth line lands on its pasted counterpart, as far as the bound lets
    # it: the face above it keeps 0.5-1.5 times its height, and the chin moves MAX_SHIFT at most.
    # Near the ears the jaw is level with the mouth, so the bound holds it where it is.
    limit = min(MAX_SHIFT * iod / chin_v, MAX_STRETCH)
    under = jaw_v > 0
    wanted = ((jaw_to - centre) @ ey - jaw_v) / np.where(under, jaw_v, 1.0)
    stretch = np.where(under, np.clip(wanted, -limit, limit), 0.0)
    if np.abs(stretch * np.maximum(jaw_v, 0.0)).max() < MIN_SHIFT * iod:
        return None
    order = np.argsort(jaw_u)
    return JawWarp(centre, ex, ey, jaw_u[order], jaw_v[order], stretch[order], NECK_REACH * iod)


def follow_jaw(frame: np.ndarray, points: np.ndarray, jaw_to: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """Write `frame` into `out` (same shape) with its jaw line moved onto `jaw_to` ((len(JAW), 2),
    in `frame`'s pixels: the pasted frame's jaw in this head's pose), and return `points` moved
    with it. Only the box from the mouth line to the neck's end is resampled."""
    np.copyto(out, frame)
    warp = jaw_warp(points, jaw_to)
    box = None if warp is None else warp.box(frame.shape)
    if warp is None or box is None:
        return points.astype(np.float32)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = warp.remapped(frame, box)
    return warp.move(points)
