"""The avatar store: the layout (layout.py) plus the frames and arrays inside each folder."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..engines.base import LoadedAvatar
from .layout import (
    AVATAR_ID_PATTERN,
    ENGINE_DIR,
    FORMAT_VERSION,
    FRAMES_DIR,
    LANDMARKS_FILE,
    MANIFEST,
    AvatarLayout,
    corrupt,
    frame_path,
    validate_avatar_id,
)

__all__ = ["AVATAR_ID_PATTERN", "FORMAT_VERSION", "MANIFEST", "AvatarStore", "validate_avatar_id",
           "write_frame", "read_frame"]

# PNG decoding releases the GIL, so a few threads load an avatar that many times faster
# (a 235-frame 720p avatar: 4.4 s on one thread).
LOAD_THREADS = max(1, min(4, os.cpu_count() or 1))


class AvatarStore(AvatarLayout):
    def load(self, avatar_id: str, manifest: dict | None = None) -> LoadedAvatar:
        """Read an avatar back. Pass the `manifest` already read to skip reading it again."""
        manifest = manifest if manifest is not None else self.manifest(avatar_id)
        folder = self.path(avatar_id)
        n = manifest["frames"]
        with ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="avatar-load") as pool:
            frames = list(pool.map(lambda i: read_frame(folder, i), range(n)))
        if len({f.shape for f in frames}) != 1:
            raise corrupt(avatar_id, FRAMES_DIR, "holds frames of different sizes")
        try:
            landmarks = np.load(folder / LANDMARKS_FILE)
        except (OSError, ValueError, EOFError) as e:
            raise corrupt(avatar_id, LANDMARKS_FILE, "cannot be read") from e
        if landmarks.shape[0] != n:
            raise corrupt(avatar_id, LANDMARKS_FILE, f"holds {landmarks.shape[0]} frames, not {n}")
        return LoadedAvatar(avatar_id, folder, manifest, frames, landmarks, folder / ENGINE_DIR)

    def write_contents(self, staging: Path, frames: list[np.ndarray], landmarks: np.ndarray) -> Path:
        """Write frames and landmarks into a staging folder. Returns the engine's (empty) folder."""
        (staging / FRAMES_DIR).mkdir()
        for i, frame in enumerate(frames):
            write_frame(staging, i, frame)
        np.save(staging / LANDMARKS_FILE, landmarks)
        engine_dir = staging / ENGINE_DIR
        engine_dir.mkdir()
        return engine_dir


def write_frame(folder: Path, index: int, frame: np.ndarray) -> None:
    path = frame_path(folder, index)
    # Level 1: lossless and ~4x faster to write than the default, for ~15 % more bytes.
    ok, png = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"could not encode frame {index} as PNG")
    path.write_bytes(png.tobytes())  # Python's write, so a full disk raises with its errno


def read_frame(folder: Path, index: int) -> np.ndarray:
    """One stored frame. A missing or undecodable PNG (say, truncated) is AvatarCorrupt."""
    path = frame_path(folder, index)
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise corrupt(folder.name, f"{FRAMES_DIR}/{path.name}", "is missing or not a readable PNG")
    return frame
