"""The avatar format on disk, in the standard library alone.

This module owns every name in the layout; the store (frames and arrays) and the operator
(cleanup on the shared volume) both build on it. It imports nothing beyond the standard
library and `errors`, so the operator's image needs no numpy or OpenCV.

Layout under the store root (`MUSETALK_RESULT_DIR/avatars`):

    <id>/manifest.json     facts about the avatar (see `info.py`), with a format stamp
    <id>/frames/%06d.png   the normalised timeline, lossless BGR
    <id>/landmarks.npy     (N, 478, 2) float32 FaceMesh points
    <id>/engine/           the preparing engine's own artifacts
    .staging/<id>.<token>  an avatar being written; renamed to <id> when complete
    .trash/<id>.<token>    an avatar being replaced or deleted; removed right after

A rename within one filesystem is atomic, so readers see either no avatar or a whole one,
also when a writer is killed mid-way (its staging folder is swept later).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..disk.faults import disk_writes
from ..errors import AvatarCorrupt, AvatarExists, AvatarNotFound, InvalidAvatarId

__all__ = [
    "AVATAR_ID_PATTERN", "FORMAT_VERSION", "MANIFEST", "FRAMES_DIR", "LANDMARKS_FILE", "ENGINE_DIR",
    "STAGING", "TRASH", "AvatarId", "AvatarLayout", "validate_avatar_id", "frame_path", "corrupt",
]

log = logging.getLogger(__name__)

AVATAR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FRAMES_DIR = "frames"
LANDMARKS_FILE = "landmarks.npy"
ENGINE_DIR = "engine"
STAGING = ".staging"
TRASH = ".trash"
STALE_AFTER_S = 6 * 3600.0  # a staging folder untouched this long belongs to a dead writer


class AvatarId(str):
    """An id that passed `validate_avatar_id`: paths built from one need not check it again."""

    __slots__ = ()


def validate_avatar_id(avatar_id: str) -> AvatarId:
    """The one id check: every path and resource name is built from an id that passed it."""
    if not isinstance(avatar_id, str) or not AVATAR_ID_PATTERN.fullmatch(avatar_id):
        raise InvalidAvatarId(f"avatar_id {avatar_id!r} must match {AVATAR_ID_PATTERN.pattern}")
    return AvatarId(avatar_id)


def frame_path(folder: Path, index: int) -> Path:
    return folder / FRAMES_DIR / f"{index:06d}.png"


def corrupt(avatar_id: str, name: str, problem: str) -> AvatarCorrupt:
    """The error for a damaged file of one avatar; names the file within the avatar, not the server path."""
    return AvatarCorrupt(f"avatar {avatar_id!r} is corrupt on disk: {name} {problem}; preprocess it again")


def not_found(avatar_id: str) -> AvatarNotFound:
    return AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")


class AvatarLayout:
    """Avatar folders under one root: naming, listing, atomic staging, deletion, sweeping."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> None:
        (self.root / STAGING).mkdir(parents=True, exist_ok=True)
        (self.root / TRASH).mkdir(parents=True, exist_ok=True)

    def writable(self) -> bool:
        try:
            self.ensure()
            probe = self.root / STAGING / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            return True
        except OSError:
            return False

    def sweep(self, older_than_s: float = STALE_AFTER_S) -> int:
        """Remove staging and trash left by killed writers. Returns how many folders went."""
        removed, now = 0, time.time()
        for sub in (STAGING, TRASH):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if now - entry.stat().st_mtime >= older_than_s:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed

    def path(self, avatar_id: str) -> Path:
        checked = avatar_id if isinstance(avatar_id, AvatarId) else validate_avatar_id(avatar_id)
        return self.root / checked

    def exists(self, avatar_id: str) -> bool:
        return (self.path(avatar_id) / MANIFEST).is_file()

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if AVATAR_ID_PATTERN.fullmatch(p.name) and (p / MANIFEST).is_file()
        )

    def manifest(self, avatar_id: str) -> dict[str, Any]:
        path = self.path(avatar_id) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise not_found(avatar_id) from e
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise corrupt(avatar_id, MANIFEST, "is not valid JSON") from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("frames"), int) or manifest["frames"] < 1:
            raise corrupt(avatar_id, MANIFEST, "lacks a positive frame count")
        return manifest

    def manifests(self) -> list[dict[str, Any]]:
        out = []
        for avatar_id in self.ids():
            try:
                out.append(self.manifest(avatar_id))
            except AvatarNotFound:
                continue  # deleted between listing and reading
            except AvatarCorrupt as e:
                log.error("%s: left out of the list", e.detail)  # the others still list
        return out

    def stamp(self, avatar_id: str) -> tuple[int, int]:
        """(inode, mtime) of the manifest: every replacement renames a new folder in, so it changes."""
        try:
            st = os.stat(self.path(avatar_id) / MANIFEST)
        except FileNotFoundError as e:
            raise not_found(avatar_id) from e
        return st.st_ino, st.st_mtime_ns

    def delete(self, avatar_id: str) -> None:
        folder = self.path(avatar_id)
        if not (folder / MANIFEST).is_file():
            raise AvatarNotFound(f"avatar {avatar_id!r} does not exist")
        self.ensure()
        doomed = self.root / TRASH / f"{avatar_id}.{uuid.uuid4().hex}"
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def remove_all(self, avatar_id: str) -> bool:
        """Remove the avatar, debris of one and its staging. True if a committed avatar went."""
        removed = False
        if self.exists(avatar_id):
            self.delete(avatar_id)
            removed = True
        elif self.path(avatar_id).exists():
            shutil.rmtree(self.path(avatar_id))  # a folder without a manifest is debris, not an avatar
        # Ids hold no '.', so '<id>.' prefixes only this avatar's staging folders.
        for leftover in (self.root / STAGING).glob(f"{avatar_id}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return removed

    @contextmanager
    def stage(self, avatar_id: str, overwrite: bool = False) -> Iterator[Path]:
        """Yield an empty staging folder; on clean exit it becomes the avatar, else it vanishes."""
        if not overwrite and self.exists(avatar_id):
            raise AvatarExists(f"avatar {avatar_id!r} already exists; pass overwrite=true to replace it")
        self.ensure()
        staging = self.root / STAGING / f"{validate_avatar_id(avatar_id)}.{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            # A full disk anywhere inside (frames, arrays, the engine's files) is one 507.
            with disk_writes(f"avatar {avatar_id!r}"):
                yield staging
                self._commit(staging, avatar_id, overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _commit(self, staging: Path, avatar_id: str, overwrite: bool) -> None:
        target = self.path(avatar_id)
        if target.exists():
            if not overwrite and (target / MANIFEST).is_file():
                raise AvatarExists(f"avatar {avatar_id!r} was created meanwhile")
            old = self.root / TRASH / f"{avatar_id}.{uuid.uuid4().hex}"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
