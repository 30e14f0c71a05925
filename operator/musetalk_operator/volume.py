"""The operator's view of the shared avatars volume: cleanup on delete and a frames fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musetalk_server.avatars.layout import AvatarLayout
from musetalk_server.errors import AvatarCorrupt

from .jobs import InvalidAvatar, avatar_id

__all__ = ["is_stored", "remove_avatar", "remove_upload", "stored_info"]


def is_stored(root: Path, name: str) -> bool:
    """A preprocessed avatar (any generation's) is on the volume: the service can serve it. Never
    for a name that is no avatar id (an InvalidSpec), or a volume that cannot be read."""
    try:
        return AvatarLayout(root).exists(avatar_id(name))
    except (InvalidAvatar, OSError):
        return False


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


def stored_info(root: Path, name: str) -> dict[str, Any]:
    """Frames and engine from the committed manifest, for when the Job's pod (and its message) is
    gone. Empty when there is no avatar or its manifest cannot be read (the status then lacks them)."""
    store = AvatarLayout(root)
    if not store.exists(avatar_id(name)):
        return {}
    try:
        manifest = store.manifest(name)
    except AvatarCorrupt:
        return {}
    return {key: manifest[key] for key in ("frames", "engine") if key in manifest}
