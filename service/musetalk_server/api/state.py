"""What the running app holds: the runtime (store, engine, use cases), metrics, worker pools."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..metrics import Metrics
from ..render.async_jobs import Jobs
from ..runtime import Runtime
from ..webrtc.live import WebRtc

__all__ = ["AppState"]


@dataclass
class AppState:
    runtime: Runtime
    metrics: Metrics
    pool: ThreadPoolExecutor  # JPEG encoding
    pool_size: int
    webrtc: WebRtc  # live sessions by id, and their WebRTC peers
    streams: set[Any] = field(default_factory=set)  # the sinks in flight, closed at shutdown
    # Real-time sessions open (the device scheduler admits them: runtime.scheduler).
    sessions: set[Any] = field(default_factory=set)
    jobs: Jobs | None = None  # async batch jobs, closed at shutdown
    tasks: set[Any] = field(default_factory=set)  # sessions that run past their request (WebRTC-fed)

    @property
    def settings(self):
        return self.runtime.settings

    @property
    def engine_name(self) -> str:
        return self.runtime.choice.name

    def loaded_avatars(self) -> list[str]:
        return self.runtime.loaded_avatars()
