"""Face geometry for the lite engine: mouth measures, pose alignment, the replaced region.

All measures are in inter-ocular units (outer eye corners), so they compare across frames,
faces and resolutions.
"""

from __future__ import annotations

import numpy as np

from ...face.landmarks import LIPS_INNER, LIPS_OUTER, interocular

__all__ = [
    "STABLE_POINTS",
    "REGION_POINTS",
    "mouth_aperture",
    "mouth_width",
    "similarity",
    "apply_affine",
    "region_polygon",
]

# Vertices that do not move when the mouth does: eye corners and the nose ridge.
# A similarity fitted on them carries a mouth from one frame into another frame's head pose.
STABLE_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 98, 327)
# Chin and lower cheeks: with the dilated outer lips they bound what the engine repaints.
CHIN_POINTS = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397)
CHEEK_POINTS = (214, 434, 207, 427)
UPPER_LIP_TOP = (164, 167, 393)  # between the nose and the upper lip
REGION_POINTS = LIPS_OUTER + CHIN_POINTS + CHEEK_POINTS + UPPER_LIP_TOP
MOUTH_CORNERS = (61, 291)
LIP_DILATION = 1.25  # the lips' outline grows by this factor about the mouth centre
CHIN_MARGIN = 0.08  # inter-ocular units the region reaches below the chin, so that a chin which
# rose or dropped with the pasted mouth covers the old chin line instead of leaving it half-blended


def mouth_aperture(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inter-ocular distance, (...,) for (..., 478, 2)."""
    gap = points[..., 14, 1] - points[..., 13, 1]
    return np.maximum(gap, 0.0) / interocular(points)


def mouth_width(points: np.ndarray) -> np.ndarray:
    """Outer mouth-corner distance over inter-ocular distance."""
    a, b = MOUTH_CORNERS
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1) / interocular(points)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking src points to dst."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    # Complex-number form of 2-D Procrustes: z_d ~ c * z_s.
    zs, zd = s[:, 0] + 1j * s[:, 1], d[:, 0] + 1j * d[:, 1]
    c = np.vdot(zs, zd) / max(np.vdot(zs, zs).real, 1e-12)
    a, b = c.real, c.imag
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]]).astype(np.float64)


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def region_polygon(points: np.ndarray) -> np.ndarray:
    """(K, 2) points whose convex hull is the mouth-and-chin area of one frame."""
    lips = points[list(LIPS_OUTER)]
    centre = lips.mean(0)
    grown = centre + (lips - centre) * LIP_DILATION
    chin = points[list(CHIN_POINTS)]
    away = chin - centre
    chin = chin + away / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6) * (
        CHIN_MARGIN * float(interocular(points)))
    others = points[list(CHEEK_POINTS + UPPER_LIP_TOP)]
    return np.vstack([grown, chin, others]).astype(np.float32)


def inner_lip_polygon(points: np.ndarray) -> np.ndarray:
    return points[list(LIPS_INNER)].astype(np.float32)
