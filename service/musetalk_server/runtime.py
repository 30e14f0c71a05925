"""The composition root: Settings -> engine choice, store, cache and the use cases.

The app factory and the CLI both build a `Runtime`, so a request and a command run the same
objects. This is also the one place that looks for a GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .avatars.cache import AvatarCache
from .avatars.kube import AvatarResources
from .avatars.preprocess import PreprocessLimits
from .avatars.service import ClusterAvatars, LocalAvatars, crd_engine
from .avatars.store import AvatarStore
from .config import Settings
from .device.cores_free import CoresFree
from .device.scheduler import CPU_SAMPLE_S, DeviceScheduler
from .engines.base import Engine
from .engines.registry import create_engine, resolve_engine_name
from .errors import NotReady, WeightsError
from .metrics import Metrics
from .render.entry import RenderEntry
from .render.request import RequestChecks

__all__ = ["EngineChoice", "choose_engine", "build_scheduler", "Runtime"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    device: str


def choose_engine(settings: Settings) -> EngineChoice:
    """Which engine on which device. `musetalk` asked for by name, with files missing, refuses
    to start (naming them) instead of falling back behind the user's back. So does `auto` on a GPU
    in cluster mode: there the fallback would hold GPUs for the CPU engine, and its avatars would
    all turn 409 avatar_engine_mismatch once the weights arrive (docs/kubernetes.md)."""
    import torch

    cuda = torch.cuda.is_available()
    name = resolve_engine_name(settings.engine, model_dir=settings.model_dir, cuda=cuda)
    gpu_cluster_auto = settings.engine == "auto" and cuda and settings.avatar_source == "kubernetes"
    if settings.engine == "musetalk" or gpu_cluster_auto:  # the load checks every file it reads
        from .engines.musetalk.weights import missing_weights

        missing = missing_weights(settings.model_dir)
        if missing:
            fix = " (fetch them, e.g. the chart's models.download=true, or set MUSETALK_ENGINE=lite)" \
                if gpu_cluster_auto else ""
            raise WeightsError(f"MUSETALK_ENGINE={settings.engine} but weights are missing under "
                               f"{settings.model_dir}{fix}: " + ", ".join(missing))
    device = f"cuda:{settings.gpu_id}" if cuda and name == "musetalk" else "cpu"
    return EngineChoice(name, device)


def build_scheduler(settings: Settings, choice: EngineChoice, metrics: Metrics | None = None) -> DeviceScheduler:
    """The device's scheduler. A CPU engine's workers are the cores, one frame step each at a
    time; a GPU is one worker whose engine batches the frames of every stream together."""
    batching = choice.device.startswith("cuda")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = settings.device_workers or cores  # a container's CPU limit is not in its affinity mask
    workers = 1 if batching else cores
    # On the CPU, other processes' work leaves fewer cores than the workers; a GPU is the process's own.
    cores_free = None if batching else CoresFree.available(os.cpu_count() or cores, CPU_SAMPLE_S)
    return DeviceScheduler(
        workers=workers, frame_slots=None if batching else cores,
        unpaced_slots=settings.batch_size if batching else cores,
        queue_timeout_s=settings.queue_timeout_s, max_queue=settings.max_queue,
        max_realtime=settings.max_realtime_streams, measure_frames=not batching, cores_free=cores_free,
        metrics=metrics)


@dataclass
class Runtime:
    """What a serving process or a CLI command holds. The engine may arrive later (it loads
    in the background in the service); until then `rendering` raises NotReady."""

    settings: Settings
    choice: EngineChoice
    store: AvatarStore
    avatars: LocalAvatars | ClusterAvatars
    scheduler: DeviceScheduler
    metrics: Metrics | None = None
    engine: Engine | None = None
    cache: AvatarCache | None = None
    load_error: str | None = None
    _rendering: RenderEntry | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, *, choice: EngineChoice | None = None,
              metrics: Metrics | None = None) -> Runtime:
        choice = choice or choose_engine(settings)
        store = AvatarStore(settings.avatar_dir)
        scheduler = build_scheduler(settings, choice, metrics)
        avatars: LocalAvatars | ClusterAvatars
        if settings.avatar_source == "kubernetes":
            avatars = ClusterAvatars(
                store, AvatarResources(settings), volume=settings.result_dir,
                engine=crd_engine(choice.name, settings.engine), fps=settings.fps,
                timeout_s=settings.preprocess_timeout_s, recheck_s=settings.avatar_recheck_s, metrics=metrics,
                stopping=lambda: scheduler.draining)
        else:
            limits = PreprocessLimits(settings.fps, settings.max_video_seconds, settings.max_video_side,
                                      settings.max_video_pixels, settings.max_video_frames, settings.max_image_pixels)
            avatars = LocalAvatars(store, limits, metrics, scheduler=scheduler)
        return cls(settings, choice, store, avatars, scheduler, metrics)

    def load_engine(self) -> Engine:
        """Blocking: build and load the chosen engine, then attach it."""
        s = self.settings
        engine = create_engine(self.choice.name, model_dir=s.model_dir, device=self.choice.device,
                               batch_size=s.batch_size)
        self.attach(engine)
        return engine

    def attach(self, engine: Engine) -> None:
        if hasattr(engine, "on_device_call"):  # a batching engine reports its device calls
            engine.on_device_call = lambda frames, seconds: self.scheduler.observe_device(engine.name, frames, seconds)
        identity = self.avatars.serving_identity if isinstance(self.avatars, ClusterAvatars) else None
        cache = AvatarCache(self.store, engine, self.settings.max_loaded_avatars, identity)
        self.avatars.attach(engine, cache)
        checks = RequestChecks(cache, max_audio_seconds=self.settings.max_audio_seconds, serving_fps=self.settings.fps)
        self._rendering = RenderEntry(checks, self.scheduler, engine=self.choice.name)
        self.cache = cache
        self.engine = engine  # last: readers test `engine is not None` to mean ready

    @property
    def rendering(self) -> RenderEntry:
        """The one render entry (render/entry.py); NotReady until the engine has loaded."""
        if self._rendering is None:
            raise NotReady(self.load_error or f"engine {self.choice.name} is still loading")
        return self._rendering

    def loaded_avatars(self) -> list[str]:
        return self.cache.ids() if self.cache else []
