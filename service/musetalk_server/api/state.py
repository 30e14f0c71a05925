"""What the running app holds: settings, store, engine, caches, metrics, worker pools."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..avatars.cache import AvatarCache
from ..avatars.store import AvatarStore
from ..config import Settings
from ..engines.base import Engine
from ..pipeline import FrameStream
from .metrics import Metrics

__all__ = ["AppState"]


@dataclass
class AppState:
    settings: Settings
    store: AvatarStore
    metrics: Metrics
    engine_name: str
    device: str
    pool: ThreadPoolExecutor
    pool_size: int
    preprocess_slots: asyncio.Semaphore
    engine: Engine | None = None
    cache: AvatarCache | None = None
    load_error: str | None = None
    resources: Any = None  # avatars.kube.AvatarResources in cluster mode, else None
    streams: set[FrameStream[Any]] = field(default_factory=set)
    # Real-time sessions: who may open one (realtime.session.Admission; a scheduler's hook) and those open.
    admission: Any = None
    sessions: set[Any] = field(default_factory=set)

    def set_engine(self, engine: Engine) -> None:
        self.cache = AvatarCache(self.store, engine, self.settings.max_loaded_avatars)
        self.engine = engine  # last: readers test `engine is not None` to mean ready

    def loaded_avatars(self) -> list[str]:
        return self.cache.ids() if self.cache else []
