"""The blend mask and the paste-back: where the generated face replaces the frame, and how softly.

Upstream (spec §3.6, §5) parses the blend square with BiSeNet, keeps the v1.5 `jaw` region (skin
grown down over the chin and narrowed at the cheeks, lips and mouth in, nose out), keeps that
only inside the face box and below its centre row, and feathers it with a Gaussian. The paste
is an 8-bit alpha composite inside the box. Without BiSeNet weights, `landmark_jaw_mask` draws
a label map from FaceMesh points and runs the same `jaw` rule on it.

A mask is computed once per avatar frame and reused for every output frame that shows it:

    box = crop.face_box(lm68, bbox_shift, frame.shape[:2], points478=points)
    square = crop.blend_square(box)
    rgb = cv2.cvtColor(crop.crop_square(frame, square), cv2.COLOR_BGR2RGB)
    region = jaw_parse_mask(bisenet.parse(model, rgb))      # (512, 512), with weights
    region = landmark_jaw_mask(points, square)               # (2s, 2s), without
    mask = blend_material(frame.shape[:2], box, square, region)   # cached with box and square
    ...
    out = paste_face(frame, face256, box, square, mask)           # per output frame
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from PIL import Image

from ...errors import InvalidInput
from ...face.landmarks import JAW, LIPS_INNER, LIPS_OUTER
from .bisenet import LOWER_LIP, MOUTH, NOSE, PARSE_SIZE, SKIN, UPPER_LIP
from .crop import Box

__all__ = [
    "UPPER_BOUNDARY_RATIO",
    "BLUR_SPAN",
    "DEFAULT_BLUR",
    "CHEEK_WIDTH_V15",
    "jaw_parse_mask",
    "landmark_jaw_mask",
    "square_mask",
    "blend_material",
    "paste_face",
]

Blur = Literal["realtime", "offline"]

UPPER_BOUNDARY_RATIO = 0.5  # rows of the square above this fraction keep the original frame
# Gaussian kernel side as a fraction of the square side (k = int(span * side // 2 * 2) + 1, as
# upstream writes it): realtime avatars (`get_image_prepare_material`) blur twice as wide as
# offline `get_image`, quirk §9.8.
BLUR_SPAN: dict[str, float] = {"realtime": 0.1, "offline": 0.05}
# A streaming server is upstream's realtime Avatar: masks built once per avatar frame at
# preparation, then reused per output frame. So its softer edge is the one to mirror.
DEFAULT_BLUR: Blur = "realtime"

# Columns of the 512 parse either side of its centre that are spared the cheek narrowing. The
# v1.5 scripts and gradio pass 90; FaceParsing's own default, 80, is never used by v1.5.
CHEEK_WIDTH_V15 = 90

# The `jaw` rule's dilation kernel (33x33, anchor at the centre): a cone whose rows 10..20 widen
# 1, 3, ..., 21, then 12 rows at the full 21. cv2 reads it so that skin grows about 16 px up and,
# through the cone's tip, up to 6 px down, which carries the chin line below the jaw.
_CONE_ROWS, _TAIL_ROWS = 21, 12
# Then two erosions with a flat 35x3 ellipse, each taking ~17 px off the sides; only the cheek
# bands (outside the central columns) keep that narrowed version.
_CHEEK_ERODE = (35, 3)
_CHEEK_ERODE_TIMES = 2
_ALWAYS_IN = (MOUTH, UPPER_LIP, LOWER_LIP)

# FaceMesh's face oval: JAW runs ear to ear under the chin; these close it over the forehead.
_FOREHEAD = (389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162)
_FACE_OVAL = JAW + _FOREHEAD
# FaceMesh's nose vertices (bridge from between the eyes, tip, wings); their hull is the nose.
_NOSE = (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294,
         326, 327, 344, 440)


def _jaw_kernel() -> np.ndarray:
    side = _CONE_ROWS + _TAIL_ROWS
    centre = side // 2
    kernel = np.zeros((side, side), dtype=np.uint8)
    for row in range(_CONE_ROWS // 2, _CONE_ROWS):
        half = row - _CONE_ROWS // 2
        kernel[row, centre - half:centre + half + 1] = 1
    half = _CONE_ROWS - 1 - _CONE_ROWS // 2
    kernel[_CONE_ROWS:, centre - half:centre + half + 1] = 1
    return kernel


_JAW_KERNEL = _jaw_kernel()


def jaw_parse_mask(labels: np.ndarray, left_cheek_width: int = CHEEK_WIDTH_V15,
                   right_cheek_width: int = CHEEK_WIDTH_V15) -> np.ndarray:
    """(512, 512) uint8 0/255: upstream's v1.5 `jaw` region of a BiSeNet label map."""
    if labels.shape != (PARSE_SIZE, PARSE_SIZE):
        raise InvalidInput(f"jaw_parse_mask wants a ({PARSE_SIZE}, {PARSE_SIZE}) label map, got {labels.shape}")
    skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
    dilated = cv2.dilate(skin, _JAW_KERNEL, iterations=1)
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, _CHEEK_ERODE)
    eroded = cv2.erode(dilated, ellipse, iterations=_CHEEK_ERODE_TIMES)
    # Upstream's cheek mask is a filled rectangle up to and including column centre - left.
    cols = np.arange(PARSE_SIZE)
    centre = PARSE_SIZE // 2
    cheek = (cols <= centre - left_cheek_width) | (cols >= centre + right_cheek_width)
    region = np.where(cheek[None, :], eroded, dilated) == 255
    keep = (region & (labels != NOSE)) | np.isin(labels, _ALWAYS_IN)
    return np.where(keep, 255, 0).astype(np.uint8)


def landmark_jaw_mask(points478: np.ndarray, square: Box) -> np.ndarray:
    """(2s, 2s) uint8: the `jaw` region from FaceMesh points, for when BiSeNet weights are absent.

    The points (frame pixels) are drawn as a label map of the 512 parse of the square: face oval
    as skin, the nose hull as nose, lips and mouth opening; then the same `jaw` rule runs on it.
    The oval holds no eyes or brows, which only matters above the box centre, where the blend
    mask is cut anyway.
    """
    if points478.ndim != 2 or points478.shape[1] != 2 or not np.all(np.isfinite(points478)):
        raise InvalidInput(f"landmark_jaw_mask wants finite (478, 2) FaceMesh points, got {points478.shape}")
    x0, y0, x1, _ = square
    scale = PARSE_SIZE / (x1 - x0)
    pts = (points478.astype(np.float64) - (x0, y0)) * scale
    labels = np.zeros((PARSE_SIZE, PARSE_SIZE), dtype=np.uint8)

    def fill(idx: tuple[int, ...], label: int) -> None:
        cv2.fillPoly(labels, [np.round(pts[list(idx)]).astype(np.int32)], label)

    fill(_FACE_OVAL, SKIN)
    cv2.fillPoly(labels, [cv2.convexHull(np.round(pts[list(_NOSE)]).astype(np.int32))], NOSE)
    fill(LIPS_OUTER, UPPER_LIP)
    fill(LIPS_INNER, MOUTH)
    return square_mask(jaw_parse_mask(labels), square)


def square_mask(mask512: np.ndarray, square: Box) -> np.ndarray:
    """The 512 parse mask resized to the (2s, 2s) square, as upstream's `face_seg` does it.

    That is PIL's default filter for an 8-bit L image, BICUBIC (antialiased when shrinking).
    cv2's cubic or area resize differ from it by up to 31 levels along the 0/255 edge, which
    still shows as one level after the blur.
    """
    side = square[2] - square[0]
    image = Image.fromarray(np.ascontiguousarray(mask512, dtype=np.uint8))  # mode L
    return np.array(image.resize((side, side), Image.Resampling.BICUBIC))


def blend_material(frame_hw: tuple[int, int], box: Box, square: Box, region_mask: np.ndarray,
                   blur: Blur = DEFAULT_BLUR) -> np.ndarray:
    """(2s, 2s) uint8 blend mask: the region inside the box, below its centre row, feathered.

    `region_mask` is (2s, 2s), or the (512, 512) parse mask, which is resized first.
    """
    h, w = frame_hw
    x1, y1, x2, y2 = box
    sx0, sy0, sx1, _ = square
    side = sx1 - sx0
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise InvalidInput(f"the face box {box} does not lie inside the {w}x{h} frame")
    if blur not in BLUR_SPAN:
        raise InvalidInput(f"blur must be one of {sorted(BLUR_SPAN)}, got {blur!r}")
    if region_mask.shape == (PARSE_SIZE, PARSE_SIZE) and side != PARSE_SIZE:
        region_mask = square_mask(region_mask, square)
    if region_mask.shape != (side, side):
        raise InvalidInput(f"the region mask is {region_mask.shape}, the square {side}x{side}")
    # Box in square coordinates; the talking area starts at the square's (= the box's) centre row.
    bx1, by1, bx2, by2 = (max(x1 - sx0, 0), max(y1 - sy0, 0), min(x2 - sx0, side), min(y2 - sy0, side))
    top = max(by1, int(side * UPPER_BOUNDARY_RATIO))
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[top:by2, bx1:bx2] = region_mask[top:by2, bx1:bx2]
    k = int(BLUR_SPAN[blur] * side // 2 * 2) + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def paste_face(frame_bgr: np.ndarray, face256_bgr: np.ndarray, box: Box, square: Box,
               mask: np.ndarray) -> np.ndarray:
    """A copy of the frame with the generated face blended into the box through `mask`.

    out = (face * m + frame * (255 - m)) / 255, rounded as PIL's paste rounds. Upstream
    composites the whole square, but outside the box the square still holds the frame's own
    pixels, so only the box can change: that is the only region computed here.
    """
    x1, y1, x2, y2 = box
    sx0, sy0, sx1, sy1 = square
    h, w = frame_bgr.shape[:2]
    if mask.shape != (sy1 - sy0, sx1 - sx0):
        raise InvalidInput(f"the mask is {mask.shape}, the square {sx1 - sx0}x{sy1 - sy0}")
    face = cv2.resize(face256_bgr, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    out = frame_bgr.copy()
    # The part of the box inside both the frame and the square...
    cx1, cy1, cx2, cy2 = max(x1, 0, sx0), max(y1, 0, sy0), min(x2, w, sx1), min(y2, h, sy1)
    if cx2 <= cx1 or cy2 <= cy1:
        return out
    m = mask[cy1 - sy0:cy2 - sy0, cx1 - sx0:cx2 - sx0]
    # ...and of that, the rectangle where the mask is set (most of the box's upper half is zero).
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return out
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = m[r0:r1, c0:c1, None].astype(np.uint16)
    f = face[cy1 - y1 + r0:cy1 - y1 + r1, cx1 - x1 + c0:cx1 - x1 + c1].astype(np.uint16)
    roi = out[cy1 + r0:cy1 + r1, cx1 + c0:cx1 + c1]
    # PIL's DIV255: exact rounding of x / 255 for x < 65536 (255 * 255 + 128 fits in uint16).
    t = f * m + roi.astype(np.uint16) * (255 - m) + 128
    roi[:] = ((t >> 8) + t) >> 8
    return out
