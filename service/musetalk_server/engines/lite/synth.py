"""Mouth shapes the avatar never showed, made by warping one it did: lips pressed shut, or parted.

A news reader or a child who talks through a whole clip may never close their lips, yet a
mouth must shut in every pause. `close_lips` pulls the two inner lip contours onto their
common midline, the upper lip down and the lower lip (and the chin with it) up, fading the pull
out towards the nose and the jaw so the warp has no edge. The mouth's interior is squeezed to
nothing, so no teeth or cavity have to be invented.

A photo, or a clip whose mouth stays shut, has the opposite gap: nothing to open. `open_lips`
drops the jaw: the lower lip moves down along the face's own axis (most at the middle of the
mouth, nothing at its corners), the chin with it, the neck under it gives way; the upper lip
stays. The gap that opens is the inner mouth: a dark cavity, shaded deeper towards its middle,
and, only if the person showed it on camera (`donor`), their own teeth and mouth interior,
hanging from the upper lip as they were filmed.

A mouth open in every frame (a photo taken mid-word) shuts the way a jaw does at rest:
`raise_jaw` lifts the lower lip and chin under an upper lip that stays, however wide the gap.
Both jaw moves are one warp (`_move_jaw`), down or up.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...face.landmarks import JAW, LIPS_INNER_LOWER, LIPS_INNER_UPPER, interocular
from .geometry import MOUTH_CORNERS

__all__ = ["close_lips", "open_lips", "raise_jaw"]

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


def close_lips(frame: np.ndarray, points: np.ndarray, keep: float = 0.0,
               max_half_gap: float = MAX_HALF_GAP) -> tuple[np.ndarray, np.ndarray]:
    """(frame, points) with the inner lips brought together; the rest of the face untouched.

    `keep`: the share of the gap left open (0: shut; 0.5 halves it), for a mouth that is open in
    every frame and needs its narrower openings too (coverage.py). `max_half_gap`: how far each
    lip may move, inter-ocular units."""
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
        half = np.where(inside, np.clip((yl - yu) / 2, 0.0, max_half_gap * iod), 0.0) * (1 - keep)
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
    gap_p = half_p / (1 - keep) if keep < 1 else half_p
    between = (np.abs(pv - mid_p) <= gap_p + 1e-6) & (half_p > 0)
    dst_v = np.where(between, mid_p + (pv - mid_p) * keep, dst_v)
    moved = centre + pu[:, None] * ex + dst_v[:, None] * ey
    return out, moved.astype(np.float32)


# Opening (open_lips). Inter-ocular units unless said otherwise.
JAW_HALF_WIDTH = 0.6  # the chin's drop fades to nothing this far either side of the mouth centre
NECK_REACH = 0.3  # under the chin, the neck gives way over this distance
CAVITY_SHADE = 0.3  # the cavity's colour at its edge, as a share of the lips' colour
CAVITY_DEPTH = 0.6  # ... and how much darker it grows towards its middle
EDGE_PX = 1.5  # anti-aliased edge of the cavity and of the teeth strip, in pixels
LIP_SAMPLE = 0.02  # the lips' colour is read this far outside the inner contours


def open_lips(frame: np.ndarray, points: np.ndarray, aperture: float,
              donor: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frame, points) with the inner-lip gap (vertices 13-14) opened to `aperture` inter-ocular
    units by dropping the lower lip and jaw; the upper face untouched. `donor`, a (frame, points)
    whose mouth is open, lends its interior (teeth); without it the cavity is dark."""
    iod = float(interocular(points))
    drop = max(aperture * iod - float(np.linalg.norm(points[14] - points[13])), 0.0)  # px at the middle
    return _move_jaw(frame, points, drop, donor)


def raise_jaw(frame: np.ndarray, points: np.ndarray, keep: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(frame, points) with the lower lip and jaw raised until the inner lips meet, or until
    `keep` of the gap is left; the upper lip and the face above it untouched.

    A mouth open wide is open because the jaw dropped, and it shuts by the jaw rising: `close_lips`,
    which moves both lips towards each other, would have to drag the upper lip half-way down a
    wide gap. Here the lower lip rises by its own gap at every point of the mouth (so the lips
    meet along their whole length), the chin by the gap at the middle, and the neck under it
    stretches to follow. The interior is covered by the rising lip, nothing is painted."""
    return _move_jaw(frame, points, -(1 - keep) * float(np.linalg.norm(points[14] - points[13])))


def _move_jaw(frame: np.ndarray, points: np.ndarray, drop: float,
              donor: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lower lip and jaw moved `drop` px down the face's axis at the middle of the mouth (up
    where negative); the upper lip stays. Opening, the new gap is an open mouth's oval filled
    with the inner mouth; closing, the lower lip follows the gap's own outline."""
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = _mouth_frame(points)
    up_u, up_v = _contour(points, LIPS_INNER_UPPER, centre, ex, ey)
    lo_u, lo_v = _contour(points, LIPS_INNER_LOWER, centre, ex, ey)
    chin_v = float((points[CHIN] - centre) @ ey)
    mid_u, half_u = (up_u[0] + up_u[-1]) / 2, max((up_u[-1] - up_u[0]) / 2, 1e-6)
    gap_mid = max(float(np.interp(mid_u, lo_u, lo_v) - np.interp(mid_u, up_u, up_v)), 1e-6)
    # Under the chin the shift fades out over `reach`; it must exceed a rising chin's lift, or
    # the neck would fold over itself.
    jaw_u, reach = JAW_HALF_WIDTH * iod, max(NECK_REACH * iod, 2 * -drop)

    def shift(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(upper lip, new lower lip, downward shift) at output mouth coordinates (u, v)."""
        top = np.interp(u, up_u, up_v)
        inside = (u > up_u[0]) & (u < up_u[-1])
        if drop >= 0:
            lip = drop * np.sqrt(np.clip(1 - ((u - mid_u) / half_u) ** 2, 0.0, 1.0))  # an open mouth's oval
        else:
            lip = np.where(inside, drop / gap_mid * np.clip(np.interp(u, lo_u, lo_v) - top, 0.0, None), 0.0)
        chin = drop * np.clip(1 - (u / jaw_u) ** 2, 0.0, 1.0)
        lower = np.interp(u, lo_u, lo_v) + lip
        low_chin = chin_v + chin
        # From the lower lip to the chin the shift turns from the lip's into the jaw's broad
        # move; under the chin it fades out. d(shift)/dv < 1 everywhere: no fold.
        s = np.clip((v - lower) / np.maximum(low_chin - lower, 1.0), 0.0, 1.0)
        below = chin * np.clip(1 - (v - low_chin) / reach, 0.0, 1.0)
        return top, lower, np.where(v <= low_chin, lip + (chin - lip) * s, below)

    # 1. The box to warp: the jaw's width, from the upper lip to the neck.
    h, w = frame.shape[:2]
    corners = np.array([centre + su * jaw_u * ex + sv * ey for su in (-1, 1)
                        for sv in (float(up_v.min()) - 2, chin_v + max(drop, 0.0) + reach)])
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if abs(drop) < 0.5 or x1 - x0 < 2 or y1 - y0 < 2:
        return frame.copy(), points.astype(np.float32)
    # 2. Inverse map: below the upper lip each output pixel reads from `shift` higher up (lower
    # down where the jaw rises).
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    rel_x, rel_y = gx - centre[0], gy - centre[1]
    u, v = rel_x * ex[0] + rel_y * ex[1], rel_x * ey[0] + rel_y * ey[1]
    top, lower, down = shift(u, v)
    src_v = np.where(v <= top, v, v - down)
    map_x = (centre[0] + u * ex[0] + src_v * ey[0]).astype(np.float32)
    map_y = (centre[1] + u * ex[1] + src_v * ey[1]).astype(np.float32)
    box = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    # 3. The gap a dropped jaw opens between the lips: the inner mouth.
    inside = np.clip((v - top) / EDGE_PX, 0, 1) * np.clip((lower - v) / EDGE_PX, 0, 1)
    if drop > 0 and inside.any():
        depth = np.sin(np.pi * np.clip((v - top) / np.maximum(lower - top, 1.0), 0, 1))
        depth *= np.sqrt(np.clip(1 - ((u - mid_u) / half_u) ** 2, 0, 1))
        lips = _lip_colour(frame, points, centre, ex, ey, iod)
        cavity = lips * CAVITY_SHADE * (1 - CAVITY_DEPTH * depth)[..., None]
        if donor is not None:
            cavity = _with_donor_interior(cavity, donor, (u - mid_u) / half_u, (v - top) / iod)
        box = box * (1 - inside[..., None]) + cavity * inside[..., None]
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(box + 0.5, 0, 255).astype(np.uint8)
    # 4. The landmarks below the lip line move with it: solve v_out = v_src + shift(v_out).
    rel = points - centre
    pu, pv = rel @ ex, rel @ ey
    lower_lip = pv > (np.interp(pu, up_u, up_v) + np.interp(pu, lo_u, lo_v)) / 2
    # Shut lips sit on one line: the contours, not the side of it, say which lip a vertex is on.
    lower_lip[list(LIPS_INNER_LOWER[1:-1])], lower_lip[list(LIPS_INNER_UPPER)] = True, False
    if drop < 0:
        # A raised jaw's outline stays where the filmed chin was: the paste reaches the lower of
        # the two chins (compose.face_limits), so it covers the open jaw down to there with the
        # neck the warp stretched up, instead of taking that neck for foreign content.
        lower_lip[list(JAW)] = False
    dst_v = pv.copy()
    for _ in range(INVERSE_STEPS):
        dst_v = pv + shift(pu, dst_v)[2]
    moved = centre + pu[:, None] * ex + np.where(lower_lip, dst_v, pv)[:, None] * ey
    return out, moved.astype(np.float32)


def _lip_colour(frame: np.ndarray, points: np.ndarray, centre: np.ndarray, ex: np.ndarray, ey: np.ndarray,
                iod: float) -> np.ndarray:
    """(3,) median BGR of the lips, read just outside both inner contours."""
    step = LIP_SAMPLE * iod
    above = points[list(LIPS_INNER_UPPER[2:-2])] - step * ey
    below = points[list(LIPS_INNER_LOWER[2:-2])] + step * ey
    xy = np.round(np.vstack([above, below])).astype(int)
    h, w = frame.shape[:2]
    xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)]
    if not len(xy):
        return np.full(3, 128.0)
    return np.median(frame[xy[:, 1], xy[:, 0]].astype(np.float64), axis=0)


def _with_donor_interior(cavity: np.ndarray, donor: tuple[np.ndarray, np.ndarray], across: np.ndarray,
                         under_lip: np.ndarray) -> np.ndarray:
    """`cavity` with the donor's filmed mouth interior laid in under the upper lip: at the same
    share of the mouth's width (`across`, -1..1) and the same distance under the upper lip
    (`under_lip`, inter-ocular units), down to the donor's own lower lip. Its teeth are shown as
    far as it showed them, not stretched; below that, the dark cavity."""
    frame, points = donor
    points = points.astype(np.float64)
    iod = float(interocular(points))
    centre, ex, ey = _mouth_frame(points)
    up_u, up_v = _contour(points, LIPS_INNER_UPPER, centre, ex, ey)
    lo_u, lo_v = _contour(points, LIPS_INNER_LOWER, centre, ex, ey)
    u = (up_u[0] + up_u[-1]) / 2 + across * (up_u[-1] - up_u[0]) / 2
    top, bottom = np.interp(u, up_u, up_v), np.interp(u, lo_u, lo_v)
    v = top + under_lip * iod
    map_x = (centre[0] + u * ex[0] + v * ey[0]).astype(np.float32)
    map_y = (centre[1] + u * ex[1] + v * ey[1]).astype(np.float32)
    shown = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    weight = np.clip((bottom - v) / EDGE_PX, 0, 1) * (np.abs(across) < 1)
    return cavity * (1 - weight[..., None]) + shown * weight[..., None]
