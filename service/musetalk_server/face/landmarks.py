"""Face landmarks from MediaPipe FaceMesh, whose weights ship inside the wheel.

FaceMesh gives 478 points (468 mesh + 10 iris). Upstream MuseTalk reasons in the iBUG 68-point
scheme (DWPose), so `to_ibug68` maps the mesh onto it with the map measured in
shared/docs/face-landmarks.md (jaw on the face oval, inner lips on the mouth opening).

MediaPipe solution objects are stateful and not thread-safe: a `FaceTracker` belongs to one
video (or one thread) at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "MESH_POINTS",
    "IBUG68_FROM_MESH",
    "LIPS_INNER",
    "LIPS_OUTER",
    "FaceTracker",
    "detect_video",
    "to_ibug68",
    "interocular",
    "inner_lip_gap",
]

MESH_POINTS = 478

# iBUG-68 index -> FaceMesh vertices (averaged where two are given).
IBUG68_FROM_MESH: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,),
    (365,), (397, 288), (361,), (323,), (454,), (356,),
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    (168,), (197,), (5,), (4,), (98,), (97,), (2,), (326,), (327,),
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)

# Dense ordered lip contours (image-left corner first), from FaceMesh's connection lists.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)
LIPS_OUTER = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[1:-1]
LIPS_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[1:-1]
JAW = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
       361, 323, 454, 356)
EYE_OUTER = (33, 263)  # outer eye corners, image left and right
INNER_LIP_MID = (13, 14)  # upper and lower inner-lip midpoints

# The two-stage fallback crops a square of this many face-box sizes around a small face, at
# this resolution, so FaceMesh sees it at a size it was trained for.
_CROP_SCALE = 2.0
_CROP_SIDE = 384
MAX_FACES = 4  # in a clip with several faces FaceMesh looks for this many; the largest is the avatar


def to_ibug68(points: np.ndarray) -> np.ndarray:
    """(..., 478, 2) FaceMesh points -> (..., 68, 2) in iBUG order."""
    out = [points[..., list(idx), :].mean(axis=-2) for idx in IBUG68_FROM_MESH]
    return np.stack(out, axis=-2).astype(np.float32)


def interocular(points: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance, the usual scale for landmark-relative measures."""
    a, b = EYE_OUTER
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def inner_lip_gap(points: np.ndarray) -> np.ndarray:
    """Vertical gap between the inner-lip midpoints, in pixels (>= 0)."""
    up, lo = INNER_LIP_MID
    return np.maximum(points[..., lo, 1] - points[..., up, 1], 0.0)


def _box_area(points: np.ndarray) -> float:
    w, h = points.max(axis=0) - points.min(axis=0)
    return float(w * h)


class FaceTracker:
    """FaceMesh over one video: tracking mode for speed, with a detector fallback for small faces."""

    def __init__(self, tracking: bool = True, max_faces: int = 1) -> None:
        # Imported here: mediapipe costs ~0.5 s to import and is not needed by every command.
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not tracking,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )
        self._crop_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5
        )
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def close(self) -> None:
        for obj in (self._mesh, self._crop_mesh, self._detector):
            obj.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        """(478, 2) float32 pixel coordinates of the largest face, or None."""
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        pts = self._mesh_points(self._mesh, rgb)
        if pts is None:
            pts = self._detect_small(rgb)
        return pts

    @staticmethod
    def _mesh_points(mesh: object, rgb: np.ndarray) -> np.ndarray | None:
        res = mesh.process(rgb)  # type: ignore[attr-defined]
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        faces = [np.array([[p.x * w, p.y * h] for p in f.landmark], dtype=np.float32) for f in res.multi_face_landmarks]
        return max(faces, key=_box_area)  # several faces: always the largest, frame after frame

    def _detect_small(self, rgb: np.ndarray) -> np.ndarray | None:
        # FaceMesh's own detector sees the frame at 128 px and misses faces under ~5 % of the
        # frame width; the full-range detector finds them, then FaceMesh runs on a crop.
        res = self._detector.process(rgb)
        if not res.detections:
            return None
        h, w = rgb.shape[:2]
        best = max(res.detections, key=lambda d: d.location_data.relative_bounding_box.width)
        box = best.location_data.relative_bounding_box
        cx, cy = (box.xmin + box.width / 2) * w, (box.ymin + box.height / 2) * h
        side = max(box.width * w, box.height * h) * _CROP_SCALE
        scale = _CROP_SIDE / side
        # Similarity transform: frame -> crop, centred on the face.
        m = np.array([[scale, 0, _CROP_SIDE / 2 - scale * cx], [0, scale, _CROP_SIDE / 2 - scale * cy]])
        crop = cv2.warpAffine(rgb, m, (_CROP_SIDE, _CROP_SIDE), flags=cv2.INTER_LINEAR)
        pts = self._mesh_points(self._crop_mesh, crop)
        if pts is None:
            return None
        return ((pts - m[:, 2]) / scale).astype(np.float32)


def faces_to_track(frames: Sequence[np.ndarray]) -> int:
    """1 when the first, middle and last frames show at most one face, else MAX_FACES.

    Tracking several faces makes FaceMesh run its detector on every frame (2-3x slower), so a
    clip pays for it only when it holds more than one face; then the largest is the avatar's.
    """
    import mediapipe as mp

    picks = {0, len(frames) // 2, len(frames) - 1} if frames else set()
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as detector:
        for i in sorted(picks):
            found = detector.process(np.ascontiguousarray(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB))).detections
            if found and len(found) > 1:
                return MAX_FACES
    return 1


def detect_video(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks for every frame of one video.

    Returns (points (N, 478, 2) float32, found (N,) bool). Frames without a face hold NaN.
    """
    pts = np.full((len(frames), MESH_POINTS, 2), np.nan, dtype=np.float32)
    found = np.zeros(len(frames), dtype=bool)
    with FaceTracker(tracking=len(frames) > 1, max_faces=faces_to_track(frames)) as tracker:
        for i, frame in enumerate(frames):
            p = tracker.detect(frame)
            if p is not None:
                pts[i], found[i] = p, True
    return pts, found
