"""An independent mouth measure for the lip-sync eval: dlib's 68-point landmarks, not FaceMesh.

The lite engine picks and pastes mouths by FaceMesh's landmarks, so a score read with FaceMesh
could flatter it (a pasted mouth that FaceMesh reads right but looks wrong). dlib's detector and
shape model are trained apart from FaceMesh, on other data, so they check the same mouths with
other eyes. Optional: `pip install dlib-bin face-recognition-models` (the `eval` extra in
pyproject.toml); the eval says so if they are missing.

aperture = mean gap of the three inner-lip point pairs (61-67, 62-66, 63-65) over the distance of
the outer eye corners (36, 45): the same inter-ocular units as the FaceMesh measure.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DETECT_SIDE = 480  # faces are found on a copy this big (long side); landmarks on the full frame
INNER_PAIRS = ((61, 67), (62, 66), (63, 65))
EYE_CORNERS = (36, 45)
# dlib's inner-lip points sit a little apart even on shut lips: on the ground-truth clips' frames
# FaceMesh reads as shut (< 0.02), dlib reads 0.015-0.05 (median), 0.065 at most (a child's full
# lips); on frames FaceMesh reads open (> 0.05) its 5th percentile is 0.056-0.084.
CLOSED_APERTURE = 0.06


class DlibMouth:
    """Per-frame inner-lip aperture from dlib's 68 points."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as e:  # optional: only this measure needs it
            raise SystemExit("--detector dlib needs dlib: pip install '.[eval]' (dlib-bin, face-recognition-models)") from e
        self._dlib = dlib
        self._detect = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(_model_path()))

    def apertures(self, frames: list[np.ndarray]) -> np.ndarray:
        """(N,) apertures; a frame with no face found takes its last seen neighbour's (0 at the start)."""
        out = np.full(len(frames), np.nan)
        box = None
        for i, frame in enumerate(frames):
            box = self._face(frame) or box
            if box is None:
                continue
            pts = self._shape(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), box)
            p = np.array([(pts.part(k).x, pts.part(k).y) for k in range(68)], np.float64)
            gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in INNER_PAIRS])
            out[i] = gap / max(np.linalg.norm(p[EYE_CORNERS[0]] - p[EYE_CORNERS[1]]), 1e-6)
        return _fill(out)

    def _face(self, frame: np.ndarray):
        h, w = frame.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w))
        small = cv2.resize(frame, (round(w * scale), round(h * scale))) if scale < 1 else frame
        faces = self._detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 0)
        if not faces:
            return None
        f = max(faces, key=lambda r: r.width() * r.height())
        return self._dlib.rectangle(int(f.left() / scale), int(f.top() / scale), int(f.right() / scale),
                                    int(f.bottom() / scale))


def _model_path() -> Path:
    # face_recognition_models ships the file; read its folder directly (its own helper needs
    # pkg_resources, which new setuptools no longer has).
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise SystemExit("--detector dlib needs face-recognition-models: pip install '.[eval]'")
    return Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"


def _fill(values: np.ndarray) -> np.ndarray:
    ok = np.flatnonzero(~np.isnan(values))
    if not len(ok):
        return np.zeros(len(values))
    idx = np.maximum.accumulate(np.where(~np.isnan(values), np.arange(len(values)), -1))
    return np.where(idx >= 0, values[np.maximum(idx, 0)], values[ok[0]])
