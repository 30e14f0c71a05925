"""Loaded avatars: frames in memory and an opened renderer, least recently used first out.

Another writer (a second replica, the operator's Job, a CLI run) may replace or delete an
avatar behind this process's back. Every replacement renames a new folder into place, so the
manifest's inode and mtime change; a hit re-checks them, which costs one stat. In cluster mode
the Avatar resource has the last word too (`identity`, kube.ServingCheck): an avatar whose
resource is gone is not served, whatever is still on the volume, and a new Ready generation
is read again even where a network volume's cache still shows the old manifest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..engines.base import Engine, LoadedAvatar, Renderer
from ..errors import AvatarEngineMismatch, AvatarNotFound
from .store import AvatarStore

__all__ = ["AvatarCache"]


@dataclass(frozen=True)
class _Entry:
    avatar: LoadedAvatar
    renderer: Renderer
    stamp: Hashable


class AvatarCache:
    def __init__(self, store: AvatarStore, engine: Engine, capacity: int,
                 identity: Callable[[str], Hashable] | None = None) -> None:
        self._store = store
        self._identity = identity  # cluster mode: the resource's say (raises AvatarNotFound)
        self._engine = engine
        self._capacity = capacity
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def get(self, avatar_id: str) -> tuple[LoadedAvatar, Renderer]:
        """Blocking: reads the avatar from disk on a miss or when it changed. Call from a worker thread."""
        stamp = self._stamp(avatar_id)
        with self._lock:
            entry = self._items.get(avatar_id)
            if entry is not None and entry.stamp == stamp:
                self._items.move_to_end(avatar_id)
                return entry.avatar, entry.renderer
            gate = self._loading.setdefault(avatar_id, threading.Lock())
        with gate:  # one load per avatar, however many requests ask at once
            with self._lock:
                entry = self._items.get(avatar_id)
                if entry is not None and entry.stamp == stamp:
                    return entry.avatar, entry.renderer
            entry = self._load(avatar_id, stamp)
            if self._stamp(avatar_id) != stamp:  # replaced while loading: serve it, don't keep it
                with self._lock:
                    self._loading.pop(avatar_id, None)
                return entry.avatar, entry.renderer
            with self._lock:
                self._keep(avatar_id, entry)
                self._loading.pop(avatar_id, None)
            return entry.avatar, entry.renderer

    def adopt(self, avatar: LoadedAvatar) -> None:
        """Keep an avatar that is already in memory (just preprocessed), as if it had been loaded."""
        stamp = self._stamp(avatar.avatar_id)
        entry = _Entry(avatar, self._engine.open(avatar), stamp)
        # Deleted or replaced while it was being opened: keeping it would hold a dead avatar.
        try:
            if self._stamp(avatar.avatar_id) != stamp:
                return
        except AvatarNotFound:
            return
        with self._lock:
            self._keep(avatar.avatar_id, entry)

    def evict(self, avatar_id: str) -> None:
        with self._lock:
            self._items.pop(avatar_id, None)

    def _keep(self, avatar_id: str, entry: _Entry) -> None:
        """Insert as most recently used and drop the least recently used past capacity. Hold the lock."""
        self._items[avatar_id] = entry
        self._items.move_to_end(avatar_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def _stamp(self, avatar_id: str) -> Hashable:
        """The one existence check of a request: AvatarNotFound, or the manifest's identity
        (with the resource's, in cluster mode)."""
        try:
            if self._identity is None:
                return self._store.stamp(avatar_id)
            return self._identity(avatar_id), self._store.stamp(avatar_id)
        except AvatarNotFound:
            self.evict(avatar_id)
            raise

    def _load(self, avatar_id: str, stamp: Hashable) -> _Entry:
        manifest = self._store.manifest(avatar_id)
        # The one engine check: the manifest says who made the artifacts; engines trust it.
        made_by = (manifest.get("engine"), manifest.get("engine_version"))
        wanted = (self._engine.name, self._engine.artifact_version)
        if made_by != wanted:
            raise AvatarEngineMismatch(
                f"avatar {avatar_id!r} was prepared by engine {made_by[0]} (artifacts v{made_by[1]}), "
                f"but this server runs {wanted[0]} (v{wanted[1]}); preprocess it again with overwrite=true"
            )
        avatar = self._store.load(avatar_id, manifest)
        return _Entry(avatar, self._engine.open(avatar), stamp)
