"""Paste one frame's mouth into another frame, in the background's head pose, without seams.

Only a box around the mouth-and-chin region is touched; the rest of the frame is copied as is.
The region stays inside both heads' jaw lines on the sides of the face, reaches under both chins,
and its colour is matched by a smooth field read off the skin along its soft edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...face.landmarks import JAW, interocular
from .geometry import STABLE_POINTS, apply_affine, region_polygon, similarity

__all__ = ["FEATHER", "paste_mouth", "mouth_transform"]

FEATHER = 0.07  # soft-edge width of the pasted region, inter-ocular units
RING_LO, RING_HI = 0.05, 0.5  # mask levels whose pixels set the colour correction
SHADE_SCALE = 0.15  # inter-ocular units: the colour correction may vary over this distance
SAME_CONTENT = 30.0  # summed |BGR| deviation from the ring's typical difference: beyond it, other content
_SHADE_STEP = 4  # the correction field is computed at 1/4 resolution (it is smooth anyway)
_MASK_STEP = 2  # ... and the soft region at 1/2 (see _soft_region)
_CHANNEL_SUM = np.ones((1, 3), np.float32)  # cv2.transform matrix: B + G + R
_FULL_SUPPORT = 0.2  # share of the best-supported point's ring weight that trusts the local field
# Summed |BGR| difference, after colour matching, between the source's pixel and the background's
# under the source's chin: up to FOREIGN_LO the same thing (skin on skin, a shadow on a neck), from
# FOREIGN_HI another (skin against a green shirt differs by 200-300). At 60-120 it also took a
# child's shadowed neck off her chin and cost lp_d11 0.03 of r_gt; at 100-180 that stays.
FOREIGN_LO, FOREIGN_HI = 100.0, 180.0
JAW_INSET = 2.0  # feathers: how far inside both jaw lines the pasted region must end
_STABLE = list(STABLE_POINTS)
_JAW = list(JAW)
_CHIN = slice(JAW.index(176), JAW.index(400) + 1)  # the part of the jaw line that drops as the mouth opens
NOSE_TIP = 4


def face_limits(bg_points: np.ndarray, src_points_in_bg: np.ndarray, inset: float) -> list[np.ndarray]:
    """Two (K, 2) face outlines, ear to ear, that the pasted region must stay inside.

    On the sides of the face each outline is its own head's jaw line pulled `inset` px in, so
    where the two heads differ in pose neither carries the scenery behind it over the other's
    cheek. Under the chin both take the lower of the two chins, pushed `inset` px out, so the jaw
    may rise or drop with the mouth that is pasted and the old chin line is covered.
    """
    nose = bg_points[NOSE_TIP].astype(np.float64)
    jaws = [bg_points[_JAW].astype(np.float64), src_points_in_bg[_JAW].astype(np.float64)]
    far = np.where((np.linalg.norm(jaws[0] - nose, axis=1) >= np.linalg.norm(jaws[1] - nose, axis=1))[:, None],
                   jaws[0], jaws[1])
    out = []
    for jaw in jaws:
        towards = nose - jaw
        face = jaw + towards / np.maximum(np.linalg.norm(towards, axis=1, keepdims=True), 1e-6) * inset
        face[_CHIN] = far[_CHIN] - (towards[_CHIN] / np.maximum(
            np.linalg.norm(towards[_CHIN], axis=1, keepdims=True), 1e-6)) * inset
        out.append(face)
    return out


def mouth_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """2x3 similarity taking the source frame's face onto the destination frame's pose."""
    return similarity(src_points[_STABLE].astype(np.float64), dst_points[_STABLE].astype(np.float64))


def paste_mouth(
    background: np.ndarray,
    bg_points: np.ndarray,
    source: np.ndarray,
    src_points: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`background` with its mouth region replaced by `source`'s mouth, aligned and colour-matched.

    `out` may be a preallocated frame buffer; it receives a copy of the background first.
    """
    if out is None:
        out = background.copy()
    else:
        np.copyto(out, background)
    m = mouth_transform(src_points, bg_points)
    poly = np.vstack([region_polygon(bg_points), apply_affine(m, region_polygon(src_points))])
    iod = float(interocular(bg_points))
    feather = max(FEATHER * iod, 1.0)
    margin = int(np.ceil(3 * feather)) + 2
    h, w = background.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int) - margin
    x1, y1 = np.ceil(poly.max(0)).astype(int) + margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    # 1. The region's hull, softened: full strength inside, fading out over `feather`.
    src_in_bg = apply_affine(m, src_points)
    mask = _soft_region(poly, bg_points, src_in_bg, (x0, y0), (x1 - x0, y1 - y0), feather)
    # 2. The source warped straight into the box (one resampling).
    m_box = m.copy()
    m_box[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(source, m_box, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    bg = background[y0:y1, x0:x1]
    # 3. Colour: match the patch to the background along the soft edge, where the two meet.
    ring = cv2.inRange(mask, RING_LO, RING_HI)
    if cv2.countNonZero(ring):
        patch = _match_colour(patch, bg, ring, SHADE_SCALE * iod)
    # 4. Under the source's chin it shows its own neck, collar or scenery, which did not turn
    #    with its face; where that differs from what the background shows there, keep the latter.
    mask = _drop_foreign(mask, patch, bg, src_in_bg, (x0, y0), feather)
    # 5. Blend (cv2 keeps this ~5x cheaper than the same in numpy floats).
    out[y0:y1, x0:x1] = cv2.blendLinear(patch, bg, mask, 1.0 - mask)
    return out


def _drop_foreign(mask: np.ndarray, patch: np.ndarray, bg: np.ndarray, src_in_bg: np.ndarray,
                  origin: tuple[int, int], feather: float) -> np.ndarray:
    """`mask` less the pixels outside the source's own face outline whose content differs
    from the background's (a shirt carried over a chin), faded in over `feather`.

    Where the source's chin sits above the background's, the region (which reaches under the
    lower chin so that an old chin line is covered) takes the source's pixels from below its
    chin. Skin there (a neck) covers the old chin as meant; a collar or a shirt is another thing
    altogether, and shows as a smudge of its colour on the chin."""
    # At 1/_MASK_STEP, like the soft region: the result is blurred by the feather anyway.
    step = _MASK_STEP if feather >= _MASK_STEP * 2 else 1
    h, w = mask.shape
    small = (-(-w // step), -(-h // step))
    outside = np.ones((small[1], small[0]), np.float32)
    jaw = np.round(((src_in_bg[_JAW] - origin + 0.5) / step - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(outside, [jaw], 0.0, lineType=cv2.LINE_AA, shift=4)
    diff = cv2.absdiff(patch, bg)
    if step > 1:
        diff = cv2.resize(diff, small, interpolation=cv2.INTER_AREA)
    content = cv2.transform(diff.astype(np.float32), _CHANNEL_SUM)
    foreign = outside * np.clip((content - FOREIGN_LO) / (FOREIGN_HI - FOREIGN_LO), 0.0, 1.0)
    if not cv2.countNonZero(cv2.threshold(foreign, 0.0, 1.0, cv2.THRESH_BINARY)[1]):
        return mask
    # Grown by the feather first, so the fade lies beyond the foreign pixels, not across them.
    f = feather / step
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(f) + 1,) * 2)
    ksize = int(2 * round(2 * f) + 1)
    drop = cv2.GaussianBlur(cv2.dilate(foreign, grow), (ksize, ksize), f / 1.5)
    if step > 1:
        drop = cv2.resize(drop, (w, h), interpolation=cv2.INTER_LINEAR)
    return mask * (1.0 - drop)


def _soft_region(poly: np.ndarray, bg_points: np.ndarray, src_in_bg: np.ndarray, origin: tuple[int, int],
                 size: tuple[int, int], feather: float) -> np.ndarray:
    """(h, w) float32 mask of the box at `origin`: the hull of `poly` inside both faces (frame
    coordinates, like the points), blurred by `feather`.

    Drawn and blurred at 1/_MASK_STEP resolution when the feather is wide enough, then scaled up:
    the blur leaves nothing finer than the feather in the mask, so it differs from the full-size
    one by 0.6 % of full strength on average (9 % at most, at the hull's corners; a few levels in
    the pasted frame), at a quarter of the cost (the blur was the compose's costliest step after
    the colour field)."""
    step = _MASK_STEP if feather >= _MASK_STEP * 2 else 1
    w, h = size
    small = (-(-w // step), -(-h // step))

    def fixed(points: np.ndarray) -> np.ndarray:
        # Pixel centres: full-size x sits at (x + 0.5) / step - 0.5; 4 fractional bits for fillPoly.
        return np.round(((points + 0.5) / step - 0.5) * 16).astype(np.int32)

    mask = np.zeros((small[1], small[0]), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(fixed(poly - origin)), 1.0, lineType=cv2.LINE_AA, shift=4)
    # Inside both faces: where the heads differ in pose, one jaw line would otherwise carry the
    # scenery behind one head over the other's cheek (a ghost jaw line).
    for face in face_limits(bg_points, src_in_bg, JAW_INSET * feather):
        inside = np.zeros_like(mask)
        cv2.fillPoly(inside, [fixed(face - origin)], 1.0, lineType=cv2.LINE_AA, shift=4)
        mask *= inside
    f = feather / step
    ksize = int(2 * round(2 * f) + 1)
    soft = cv2.GaussianBlur(mask, (ksize, ksize), f / 1.5)
    return soft if step == 1 else cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)


def _match_colour(patch: np.ndarray, bg: np.ndarray, ring: np.ndarray, scale_px: float) -> np.ndarray:
    """`patch` plus a smooth colour field that makes it equal `bg` on average along `ring`.

    A single offset leaves a pale or dark patch where the head turned and the light falls
    differently across the face; the field is the ring's difference spread inwards by a
    normalised blur, so each side of the mouth gets the correction its own edge asks for.
    """
    h, w = patch.shape[:2]
    small = (max(w // _SHADE_STEP, 1), max(h // _SHADE_STEP, 1))
    weight = cv2.resize(ring, small, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    diff = (cv2.resize(bg, small, interpolation=cv2.INTER_LINEAR).astype(np.float32)
            - cv2.resize(patch, small, interpolation=cv2.INTER_LINEAR))
    # Only ring pixels that show the same thing in both (skin on skin) say anything about the
    # light: where a chin meets a collar the difference is content, not colour.
    on = weight > 0.5
    if on.any():
        typical = np.median(diff[on], axis=0)
        # Summed |BGR| deviation from it; cv2 does in 15 us what numpy does in 100 on these boxes.
        # (opencv's stubs lack the Scalar form of absdiff, which its runtime takes)
        offset = (*map(float, typical), 0.0)
        deviation = cv2.transform(cv2.absdiff(diff, offset), _CHANNEL_SUM)  # type: ignore[call-overload]
        weight = weight * (deviation < SAME_CONTENT)
    sigma = max(scale_px / _SHADE_STEP, 1.0)
    weighted = diff * weight[..., None]
    num = cv2.GaussianBlur(weighted, (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
    mean = np.array(cv2.sumElems(weighted)[:3], np.float32) / max(cv2.sumElems(weight)[0], 1e-6)
    # Far from the ring the blur has no support: fall back on the ring's mean difference there.
    support = np.clip(den / (den.max() * _FULL_SUPPORT + 1e-6), 0.0, 1.0)
    field = support * num / np.maximum(den, 1e-6) + (1.0 - support) * mean
    field = cv2.resize(field.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.add(patch, field, dtype=cv2.CV_8U)  # saturating, in one pass
