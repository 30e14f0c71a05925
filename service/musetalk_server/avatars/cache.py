"""Loaded avatars: frames in memory and an opened renderer, least recently used first out."""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..engines.base import Engine, LoadedAvatar, Renderer
from ..errors import AvatarEngineMismatch
from .store import AvatarStore

__all__ = ["AvatarCache"]


class AvatarCache:
    def __init__(self, store: AvatarStore, engine: Engine, capacity: int) -> None:
        self._store = store
        self._engine = engine
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[LoadedAvatar, Renderer]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def get(self, avatar_id: str) -> tuple[LoadedAvatar, Renderer]:
        """Blocking: reads the avatar from disk on a miss. Call from a worker thread."""
        with self._lock:
            if avatar_id in self._items:
                self._items.move_to_end(avatar_id)
                return self._items[avatar_id]
            gate = self._loading.setdefault(avatar_id, threading.Lock())
        with gate:  # one load per avatar, however many requests ask at once
            with self._lock:
                if avatar_id in self._items:
                    return self._items[avatar_id]
            entry = self._load(avatar_id)
            with self._lock:
                self._items[avatar_id] = entry
                while len(self._items) > self._capacity:
                    self._items.popitem(last=False)
                self._loading.pop(avatar_id, None)
            return entry

    def evict(self, avatar_id: str) -> None:
        with self._lock:
            self._items.pop(avatar_id, None)

    def _load(self, avatar_id: str) -> tuple[LoadedAvatar, Renderer]:
        manifest = self._store.manifest(avatar_id)
        made_by = (manifest.get("engine"), manifest.get("engine_version"))
        wanted = (self._engine.name, self._engine.artifact_version)
        if made_by != wanted:
            raise AvatarEngineMismatch(
                f"avatar {avatar_id!r} was prepared by engine {made_by[0]} (artifacts v{made_by[1]}), "
                f"but this server runs {wanted[0]} (v{wanted[1]}); preprocess it again with overwrite=true"
            )
        avatar = self._store.load(avatar_id)
        return avatar, self._engine.open(avatar)
