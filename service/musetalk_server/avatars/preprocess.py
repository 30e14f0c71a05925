"""Preprocessing: a video (or still) becomes an avatar. The same code runs inline in the
service, from the CLI, and inside the Kubernetes Job the operator launches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..engines.base import AvatarFrames, Engine, LoadedAvatar
from ..errors import NoFaceDetected
from ..face.landmarks import detect_video
from ..media.audio import soundtrack
from ..media.video import VideoClip, read_video
from .layout import ENGINE_DIR, FORMAT_VERSION, MANIFEST
from .store import AvatarStore

__all__ = ["MAX_MISSING_FACE_SHARE", "PreprocessLimits", "faceless_ends_cut", "fill_missing", "preprocess_avatar"]

# Up to this share of frames may lose the face (a blink of motion blur, a hand): they borrow
# the nearest detected frame's landmarks. Beyond it the clip is not a usable avatar. Frames
# before the first face and after the last (a camera warming up, a fade from black, a title
# card) are cut off first, so they neither count nor loop through the avatar.
MAX_MISSING_FACE_SHARE = 0.2


@dataclass(frozen=True)
class PreprocessLimits:
    """The output clock and the bounds on a source video (MUSETALK_FPS, MUSETALK_MAX_VIDEO_* and
    MUSETALK_MAX_IMAGE_PIXELS), enforced while it decodes."""

    fps: float = 25.0
    max_seconds: float | None = None
    max_side: int | None = None
    max_pixels: int | None = None
    max_frames: int | None = None
    max_image_pixels: int | None = None


def preprocess_avatar(
    video_path: Path,
    avatar_id: str,
    *,
    engine: Engine,
    store: AvatarStore,
    bbox_shift: int = 0,
    overwrite: bool = False,
    limits: PreprocessLimits = PreprocessLimits(),
    source_name: str | None = None,
    source_sha256: str | None = None,
    on_stored: Callable[[LoadedAvatar], None] | None = None,
) -> dict[str, Any]:
    """Build avatar `avatar_id` from `video_path` and store it atomically. Returns its manifest.

    The caller has checked the request (avatars/service.py); the store's staging still refuses
    to replace an avatar that appeared meanwhile unless `overwrite`. `source_sha256`, the
    upload's hash, goes into the manifest so that a retry can be recognised (avatars/idempotency.py).
    `on_stored` receives the stored avatar with its frames still in memory, so a server can keep
    it loaded instead of reading every frame back from disk for the first stream.
    """
    started = time.perf_counter()
    fps = limits.fps
    # 1. decode onto the output clock, within the limits
    clip = read_video(video_path, fps, max_seconds=limits.max_seconds, max_side=limits.max_side,
                      max_pixels=limits.max_pixels, max_frames=limits.max_frames,
                      max_photo_pixels=limits.max_image_pixels)
    # 2. landmarks, (N, 478, 2), of the frames from the first face to the last
    points, found = detect_video(clip.frames)
    clip, points, found, cut = faceless_ends_cut(clip, points, found)
    shown, missing = fill_missing(points, found)
    # A frame without a face (turned away, covered, a cutaway) holds its nearest frame with one:
    # its borrowed landmarks then fit its pixels, so no mouth is pasted onto a wall, and no wall
    # is ever a mouth to paste. The frame count, and the soundtrack's clock, stay as filmed.
    points = points[shown]
    clip = replace(clip, frames=[clip.frames[k] for k in shown]) if missing else clip
    # 3. write frames, landmarks and the engine's artifacts into a staging folder
    with store.stage(avatar_id, overwrite=overwrite) as staging:
        engine_dir = store.write_contents(staging, list(clip.frames), points)
        # None for a still or a silent video; read from frame 0's instant, so the two stay in sync
        audio = soundtrack(video_path, len(clip.frames) / fps, start_s=clip.start_s)
        engine_info = engine.prepare(AvatarFrames(clip.frames, points, fps, audio), bbox_shift, engine_dir)
        # 4. the manifest goes last: a folder without one is never an avatar
        width, height = clip.size
        manifest = {
            "format": FORMAT_VERSION,
            "avatar_id": avatar_id,
            "engine": engine.name,
            "engine_version": engine.artifact_version,
            "fps": fps,
            "frames": len(clip.frames),
            "width": width,
            "height": height,
            "bbox_shift": bbox_shift,
            "source": {
                "filename": source_name or video_path.name,
                "fps": clip.source_fps,
                "frames": clip.source_frames,
                "duration_s": round(clip.duration_s, 3),
                "other_size_frames": clip.other_size_frames,
                **({"sha256": source_sha256} if source_sha256 else {}),
            },
            "face": face_stats(points, missing) | {"cut_frames": cut},
            "engine_info": engine_info,
            "server_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "preprocess_seconds": round(time.perf_counter() - started, 3),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if on_stored is not None:
        folder = store.path(avatar_id)
        on_stored(LoadedAvatar(avatar_id, folder, manifest, list(clip.frames), points, folder / ENGINE_DIR))
    return manifest


def faceless_ends_cut(clip: VideoClip, points: np.ndarray,
                      found: np.ndarray) -> tuple[VideoClip, np.ndarray, np.ndarray, dict[str, int]]:
    """The clip from its first frame with a face to its last, and how many frames went from each
    end. Its soundtrack then starts where its first kept frame is shown. A clip with no face at
    all is left whole, for fill_missing to refuse."""
    if not found.any():
        return clip, points, found, {"start": 0, "end": 0}
    first, last = int(np.argmax(found)), len(found) - int(np.argmax(found[::-1]))
    cut = {"start": first, "end": len(found) - last}
    if last - first == len(found):
        return clip, points, found, cut
    frames = clip.frames[first:last]
    kept = replace(clip, frames=frames, start_s=clip.start_s + first / clip.fps, duration_s=len(frames) / clip.fps,
                   source_frames=round(clip.source_frames * len(frames) / len(clip.frames)))
    return kept, points[first:last], found[first:last], cut


def fill_missing(points: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """For each frame, the frame whose face it shows: itself, or for a faceless frame the nearest
    frame with a face; and the faceless frames. `points[shown]` are then everyone's landmarks."""
    missing = [int(i) for i in np.flatnonzero(~found)]
    if not found.any():
        raise NoFaceDetected("no face detected in frame 0 (nor in any other frame)")
    if len(missing) > MAX_MISSING_FACE_SHARE * len(found):
        share = round(100 * (1 - MAX_MISSING_FACE_SHARE))
        raise NoFaceDetected(
            f"no face detected in frame {missing[0]} and {len(missing) - 1} other frames "
            f"({len(missing)} of {len(found)}, counted from the first frame with a face to the last); "
            f"the face must be visible in at least {share} % of them"
        )
    good = np.flatnonzero(found)
    shown = np.arange(len(found))
    for i in missing:
        shown[i] = good[np.argmin(np.abs(good - i))]
    return shown, missing


def face_stats(points: np.ndarray, missing: list[int]) -> dict[str, Any]:
    """Face box statistics over the landmarks. Engine-specific facts (musetalk's bbox_shift
    range) come from the engine's `prepare`, in `engine_info`."""
    lo, hi = points.min(axis=1), points.max(axis=1)  # (N, 2) each
    sizes = hi - lo
    return {
        "box_mean": [round(float(v), 1) for v in np.concatenate([lo.mean(0), hi.mean(0)])],
        "width_px": {"min": round(float(sizes[:, 0].min()), 1), "max": round(float(sizes[:, 0].max()), 1)},
        "height_px": {"min": round(float(sizes[:, 1].min()), 1), "max": round(float(sizes[:, 1].max()), 1)},
        "missing_frames": len(missing),
    }
