"""The operator's view of the shared avatars volume: cleanup on delete and a frames fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

from musetalk_server.avatars.store import STAGING, AvatarStore

from .jobs import avatar_id

__all__ = ["remove_avatar", "remove_upload", "stored_frames"]


def remove_avatar(root: Path, name: str) -> bool:
    """Remove the avatar and any staging it left. True if a committed avatar was removed."""
    store = AvatarStore(root)
    avatar_id(name)  # never build a path from an unchecked name
    removed = False
    if store.exists(name):
        store.delete(name)
        removed = True
    elif store.path(name).exists():
        shutil.rmtree(store.path(name))  # a folder without a manifest is debris, not an avatar
    # Ids hold no '.', so '<id>.' prefixes only this avatar's staging folders.
    for leftover in (Path(root) / STAGING).glob(f"{name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def remove_upload(data_dir: Path, relative: str) -> bool:
    """Remove a video the service uploaded for this avatar (named by the resource's annotation)."""
    base = Path(data_dir).resolve()
    target = (base / relative).resolve()
    if base not in target.parents or not target.is_file():
        return False  # never delete outside the volume
    target.unlink()
    return True


def stored_frames(root: Path, name: str) -> int | None:
    """Frames from the committed manifest, for when the Job's pod (and its message) is gone."""
    store = AvatarStore(root)
    if not store.exists(name):
        return None
    return int(store.manifest(name)["frames"])
