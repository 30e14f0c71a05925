"""Face box, 256x256 crop and blend square: MuseTalk v1.5's face geometry, in pixels.

The box follows upstream's `get_landmark_and_bbox` (spec §3.4): jaw to jaw horizontally, and
vertically symmetric about landmark 29 (lower nose bridge), so the box centre row, which becomes
the boundary between the kept upper half and the generated lower half, sits on the nose. v1.5
then adds `extra_margin` below the chin so the jaw has room to open. The blend square (§3.6) is
a 1.5x square around the box in which the mask is built and the face is pasted back.

Boxes and squares are (x1, y1, x2, y2) with exclusive ends, as numpy slices read them.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import InvalidInput, NoFaceDetected

__all__ = [
    "FACE_SIZE",
    "EXTRA_MARGIN_V15",
    "BLEND_EXPAND",
    "face_box",
    "bbox_shift_range",
    "crop_face",
    "blend_square",
    "crop_square",
]

FACE_SIZE = 256  # the UNet/VAE face crop side; the box is squashed to it, aspect not kept
EXTRA_MARGIN_V15 = 10  # px added below the chin by v1.5 (v1.0 uses 0)
BLEND_EXPAND = 1.5  # blend square half-side = this many half-box-sides (v1.0 used 1.2)

# iBUG-68 nose bridge points: 28 upper, 29 lower (the box's symmetry row), 30 the tip.
_LM_BRIDGE_UPPER, _LM_BRIDGE_LOWER, _LM_NOSE_TIP = 28, 29, 30

Box = tuple[int, int, int, int]


def face_box(
    lm68: np.ndarray,
    bbox_shift: int,
    frame_hw: tuple[int, int],
    extra_margin: int = EXTRA_MARGIN_V15,
    points478: np.ndarray | None = None,
) -> Box:
    """The crop box (x1, y1, x2, y2) for one frame from its 68 landmarks (float pixels).

    `bbox_shift` moves landmark 29 down (positive) or up: the top edge moves by twice it and the
    box centre by it. x2 and y2 are clipped to the frame.

    Upstream swaps in its S3FD detector box when the landmark box is unusable (empty, or
    x1 < 0); there is no S3FD here, so:
    - x1 < 0 alone (a jaw point left of the frame): x1 is clipped to 0, which keeps the landmark
      geometry the model was trained on and is what S3FD's own box does with negatives;
    - an empty box: the extent of `points478` (FaceMesh's full face, forehead included, the
      nearest thing to a detector box), else NoFaceDetected.
    """
    h, w = frame_hw
    if not np.all(np.isfinite(lm68)):
        raise NoFaceDetected("the 68 landmarks are not all finite (a frame without a face?)")
    # Upstream truncates DWPose's float keypoints to int32 (toward zero) before any arithmetic.
    lm = np.asarray(lm68, dtype=np.float64).astype(np.int32)
    y_mid = int(lm[_LM_BRIDGE_LOWER, 1]) + bbox_shift
    y_bot = int(lm[:, 1].max())
    x1, y1, x2, y2 = int(lm[:, 0].min()), max(0, 2 * y_mid - y_bot), int(lm[:, 0].max()), y_bot
    if y2 - y1 <= 0 or x2 - x1 <= 0:
        x1, y1, x2, y2 = _extent_box(points478, frame_hw)
    x1 = max(x1, 0)
    x2, y2 = min(x2, w), min(y2 + extra_margin, h)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise NoFaceDetected(f"the face box {(x1, y1, x2, y2)} is empty inside a {w}x{h} frame")
    return x1, y1, x2, y2


def _extent_box(points478: np.ndarray | None, frame_hw: tuple[int, int]) -> Box:
    if points478 is None or not np.all(np.isfinite(points478)):
        raise NoFaceDetected("the landmark face box is empty and no full landmark set was given")
    h, w = frame_hw
    pts = np.asarray(points478, dtype=np.float64).astype(np.int32)
    x1, y1 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
    return x1, y1, min(int(pts[:, 0].max()), w), min(int(pts[:, 1].max()), h)


def bbox_shift_range(lm68_all: np.ndarray) -> tuple[int, int]:
    """The bbox_shift range upstream prints, (-mean(y30 - y29), mean(y29 - y28)), int-truncated.

    Frames without a face (NaN landmarks) are left out, as upstream skips frames S3FD misses.
    """
    lm = np.asarray(lm68_all, dtype=np.float64)
    lm = lm[np.all(np.isfinite(lm), axis=(1, 2))].astype(np.int32)
    if len(lm) == 0:
        raise NoFaceDetected("no frame has landmarks, so there is no bbox_shift range")
    y = lm[:, :, 1].astype(np.float64)
    down = np.mean(y[:, _LM_NOSE_TIP] - y[:, _LM_BRIDGE_LOWER])
    up = np.mean(y[:, _LM_BRIDGE_LOWER] - y[:, _LM_BRIDGE_UPPER])
    return -int(down), int(up)


def crop_face(frame_bgr: np.ndarray, box: Box) -> np.ndarray:
    """(256, 256, 3) uint8: the box cut from the frame and squashed to FACE_SIZE (LANCZOS4)."""
    x1, y1, x2, y2 = box
    crop = frame_bgr[y1:y2, x1:x2]
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise InvalidInput(f"the face box {box} is empty inside a {frame_bgr.shape[1]}x{frame_bgr.shape[0]} frame")
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)


def blend_square(box: Box) -> Box:
    """The 2s x 2s square (x0, y0, x1, y1) around the box; it may run past the frame edges.

    s = int((max(w, h) // 2) * 1.5) about the integer box centre, as upstream's `get_crop_box`.
    """
    x1, y1, x2, y2 = box
    xc, yc = (x1 + x2) // 2, (y1 + y2) // 2
    s = int((max(x2 - x1, y2 - y1) // 2) * BLEND_EXPAND)
    return xc - s, yc - s, xc + s, yc + s


def crop_square(frame: np.ndarray, square: Box) -> np.ndarray:
    """The square cut from the frame, black where it runs past the edges (as PIL's crop fills)."""
    x0, y0, x1, y1 = square
    h, w = frame.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *frame.shape[2:]), dtype=frame.dtype)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if fx1 > fx0 and fy1 > fy0:
        out[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame[fy0:fy1, fx0:fx1]
    return out
