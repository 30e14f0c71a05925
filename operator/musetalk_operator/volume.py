"""The operator's view of the shared avatars volume: cleanup on delete and a frames fallback."""

from __future__ import annotations

from pathlib import Path

from musetalk_server.avatars.layout import AvatarLayout
from musetalk_server.errors import AvatarCorrupt

from .jobs import avatar_id

__all__ = ["remove_avatar", "remove_upload", "stored_frames"]


def remove_avatar(root: Path, name: str) -> bool:
    """Remove the avatar and any staging it left. True if a committed avatar was removed."""
    avatar_id(name)  # never build a path from an unchecked name
    return AvatarLayout(root).remove_all(name)


def remove_upload(data_dir: Path, relative: str) -> bool:
    """Remove a video the service uploaded for this avatar (named by the resource's annotation)."""
    base = Path(data_dir).resolve()
    target = (base / relative).resolve()
    if base not in target.parents or not target.is_file():
        return False  # never delete outside the volume
    target.unlink()
    return True


def stored_frames(root: Path, name: str) -> int | None:
    """Frames from the committed manifest, for when the Job's pod (and its message) is gone.

    None when there is no avatar, or its manifest cannot be read (the status then lacks a count).
    """
    store = AvatarLayout(root)
    if not store.exists(avatar_id(name)):
        return None
    try:
        return int(store.manifest(name)["frames"])
    except AvatarCorrupt:
        return None
