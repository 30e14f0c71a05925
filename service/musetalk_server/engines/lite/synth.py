"""Mouth shapes the avatar never showed, made by warping one it did: lips pressed shut.

A news reader or a child who talks through a whole clip may never close their lips, yet a
mouth must shut in every pause. `close_lips` pulls the two inner lip contours onto their
common midline, the upper lip down and the lower lip (and the chin with it) up, fading the pull
out towards the nose and the jaw so the warp has no edge. The mouth's interior is squeezed to
nothing, so no teeth or cavity have to be invented.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...face.landmarks import LIPS_INNER_LOWER, LIPS_INNER_UPPER, interocular
from .geometry import MOUTH_CORNERS

__all__ = ["close_lips"]

REACH_UP = 0.3  # inter-ocular units above the lip line over which the pull fades out (to the nose)
REACH_DOWN = 0.5  # ... and below it (to the chin)
BOX_HALF_WIDTH = 0.45  # the warped box spans this far either side of the mouth centre
MAX_HALF_GAP = 0.06  # a gap wider than twice this is not closed (teeth would be squashed, not hidden)
CHIN = 152  # FaceMesh's chin vertex
INVERSE_STEPS = 4  # fixed-point steps that invert the warp for the landmarks


def _mouth_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth centre and unit axes: ex along the corners, ey perpendicular, pointing to the chin."""
    a, b = points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]
    centre = (a + b) / 2
    ex = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
    ey = np.array([-ex[1], ex[0]])
    if ey @ (points[CHIN] - centre) < 0:  # the chin is below the mouth
        ey = -ey
    return centre, ex, ey


def _contour(points: np.ndarray, idx: tuple[int, ...], centre: np.ndarray, ex: np.ndarray,
             ey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rel = points[list(idx)] - centre
    u, v = rel @ ex, rel @ ey
    order = np.argsort(u)
    return u[order], v[order]


def close_lips(frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame, points) with the inner lips brought together; the rest of the face untouched."""
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = _mouth_frame(points)
    up_u, up_v = _contour(points, LIPS_INNER_UPPER, centre, ex, ey)
    lo_u, lo_v = _contour(points, LIPS_INNER_LOWER, centre, ex, ey)
    reach_up, reach_down = REACH_UP * iod, REACH_DOWN * iod

    def pull(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(midline, half gap, signed pull weight) at mouth coordinates (u, v)."""
        yu, yl = np.interp(u, up_u, up_v), np.interp(u, lo_u, lo_v)
        inside = (u > up_u[0]) & (u < up_u[-1])
        half = np.where(inside, np.clip((yl - yu) / 2, 0.0, MAX_HALF_GAP * iod), 0.0)
        mid = (yu + yl) / 2
        d = v - mid
        weight = np.where(d < 0, -np.clip(1 + d / reach_up, 0, 1), np.clip(1 - d / reach_down, 0, 1))
        return mid, half, weight

    # 1. The box to warp, in pixels.
    h, w = frame.shape[:2]
    half_w = BOX_HALF_WIDTH * iod
    corners = np.array([centre + sx * half_w * ex + sy * ey for sx in (-1, 1)
                        for sy in (-reach_up, reach_down)])
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frame.copy(), points.astype(np.float32)
    # 2. Inverse map: each output pixel reads from further from the lip line, by the half gap.
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    rel_x, rel_y = gx - centre[0], gy - centre[1]
    u, v = rel_x * ex[0] + rel_y * ex[1], rel_x * ey[0] + rel_y * ey[1]
    _, half, weight = pull(u, v)
    src_v = v + half * weight
    map_x = (centre[0] + u * ex[0] + src_v * ey[0]).astype(np.float32)
    map_y = (centre[1] + u * ex[1] + src_v * ey[1]).astype(np.float32)
    out = frame.copy()
    out[y0:y1, x0:x1] = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # 3. The landmarks move the other way: solve v_src = v_dst + half * weight(v_dst) by iteration.
    rel = points - centre
    pu, pv = rel @ ex, rel @ ey
    dst_v = pv.copy()
    for _ in range(INVERSE_STEPS):
        _, half_p, weight_p = pull(pu, dst_v)
        dst_v = pv - half_p * weight_p
    mid_p, half_p, _ = pull(pu, pv)
    between = (np.abs(pv - mid_p) <= half_p + 1e-6) & (half_p > 0)
    dst_v = np.where(between, mid_p, dst_v)
    moved = centre + pu[:, None] * ex + dst_v[:, None] * ey
    return out, moved.astype(np.float32)
