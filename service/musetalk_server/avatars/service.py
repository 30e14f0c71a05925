"""The avatar use cases, for the HTTP routes and the CLI alike: create, list, get, delete.

Two backends answer them the same way:
- `LocalAvatars` preprocesses inline, one at a time, into this process's store;
- `ClusterAvatars` (MUSETALK_AVATAR_SOURCE=kubernetes) keeps the upload on the shared volume,
  names it in an Avatar resource and waits for the operator's Job to report it Ready. Why block
  instead of answering 202: clients written against the seed API keep working unchanged, and
  `list` already shows the phase for anyone who prefers to poll.

A retry is safe in both: the same id, video (by hash) and bbox_shift answer the avatar already
there, with `ALREADY_PROCESSED` as the message, instead of 409 (avatars/idempotency.py).

Every call blocks; the routes run them on worker threads.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..device.scheduler import DeviceScheduler
from ..engines.base import Engine, LoadedAvatar
from ..errors import AvatarExists, AvatarNotFound, InvalidAvatarId, InvalidInput, NotReady
from ..metrics import Metrics
from .cache import AvatarCache
from .idempotency import SOURCE_ANNOTATION, file_sha256, manifest_differences, resource_differences
from .info import ALREADY_PROCESSED, AvatarEntry, AvatarInfo, PreprocessResult
from .kube import UPLOAD_ANNOTATION, AvatarResources, Identity, ServingCheck, remove_upload, upload_name
from .layout import validate_avatar_id
from .preprocess import PreprocessLimits, preprocess_avatar
from .store import AvatarStore

__all__ = ["Avatars", "CreateRequest", "LocalAvatars", "ClusterAvatars", "BBOX_SHIFT_LIMIT"]

log = logging.getLogger(__name__)

BBOX_SHIFT_LIMIT = 200  # px; beyond this the crop leaves the face on any real clip
# Resource names are DNS labels: a stricter subset of the local id pattern.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CRD_ENGINES = ("lite", "musetalk")


@dataclass(frozen=True)
class CreateRequest:
    """A preprocess request, checked once when it is made."""

    avatar_id: str
    bbox_shift: int = 0
    overwrite: bool = False
    source_name: str | None = None  # the upload's file name, for the manifest

    def __post_init__(self) -> None:
        object.__setattr__(self, "avatar_id", validate_avatar_id(self.avatar_id))
        if abs(self.bbox_shift) > BBOX_SHIFT_LIMIT:
            raise InvalidInput(f"bbox_shift {self.bbox_shift} is outside [-{BBOX_SHIFT_LIMIT}, {BBOX_SHIFT_LIMIT}]")


class Avatars(Protocol):
    def create(self, request: CreateRequest, video: Path) -> PreprocessResult: ...
    def list(self) -> list[AvatarEntry]: ...
    def get(self, avatar_id: str) -> AvatarEntry: ...
    def delete(self, avatar_id: str) -> None: ...


class _Shared:
    """What both backends do the same way: read the volume, and keep the cache in step."""

    def __init__(self, store: AvatarStore, metrics: Metrics | None) -> None:
        self.store, self.metrics = store, metrics
        self.cache: AvatarCache | None = None  # set once the engine is loaded

    def loaded(self) -> set[str]:
        return set(self.cache.ids()) if self.cache else set()

    def get(self, avatar_id: str) -> AvatarEntry:
        info = AvatarInfo.from_manifest(self.store.manifest(avatar_id))
        return AvatarEntry(avatar_id, avatar_id in self.loaded(), info)

    def _evict(self, avatar_id: str) -> None:
        if self.cache:
            self.cache.evict(avatar_id)


class LocalAvatars(_Shared):
    """Avatars preprocessed by this process, into its own store."""

    def __init__(self, store: AvatarStore, limits: PreprocessLimits, metrics: Metrics | None = None,
                 scheduler: DeviceScheduler | None = None) -> None:
        super().__init__(store, metrics)
        self.limits, self.scheduler = limits, scheduler
        self.engine: Engine | None = None
        self._one_at_a_time = threading.Lock()  # preprocessing takes every core it can get

    def attach(self, engine: Engine, cache: AvatarCache) -> None:
        self.engine, self.cache = engine, cache

    def create(self, request: CreateRequest, video: Path) -> PreprocessResult:
        if self.engine is None:
            raise NotReady("the engine is still loading")
        sha256 = file_sha256(video)
        if existing := self._existing(request, sha256):
            return existing
        with self._device_turn(), self._one_at_a_time:
            # A retry that arrived while its first try was still running waited here: look again.
            if existing := self._existing(request, sha256):
                return existing
            with _timed(self.metrics):
                manifest = preprocess_avatar(
                    video, request.avatar_id, engine=self.engine, store=self.store, bbox_shift=request.bbox_shift,
                    overwrite=request.overwrite, limits=self.limits, source_name=request.source_name,
                    source_sha256=sha256, on_stored=self._keep_loaded,
                )
        return PreprocessResult(request.avatar_id, AvatarInfo.from_manifest(manifest))

    def _existing(self, request: CreateRequest, sha256: str) -> PreprocessResult | None:
        """The stored avatar if this request would build the same one; AvatarExists if another is there."""
        if request.overwrite or not self.store.exists(request.avatar_id):
            return None
        assert self.engine is not None
        manifest = self.store.manifest(request.avatar_id)
        differences = manifest_differences(
            manifest, sha256=sha256, bbox_shift=request.bbox_shift, engine=self.engine.name,
            engine_version=self.engine.artifact_version, fps=self.limits.fps)
        if differences:
            raise _exists(request.avatar_id, differences)
        return PreprocessResult(request.avatar_id, AvatarInfo.from_manifest(manifest), ALREADY_PROCESSED)

    def _device_turn(self) -> AbstractContextManager[object]:
        """Preprocessing waits behind every render (lowest priority); Busy after the queue timeout."""
        if self.scheduler is None:
            return nullcontext()
        engine = self.engine.name if self.engine else "none"
        return self.scheduler.admit("preprocess", fps=self.limits.fps, frame_size=(0, 0), engine=engine)

    def list(self) -> list[AvatarEntry]:
        loaded = self.loaded()
        return [AvatarEntry(m["avatar_id"], m["avatar_id"] in loaded, AvatarInfo.from_manifest(m))
                for m in self.store.manifests()]

    def delete(self, avatar_id: str) -> None:
        self.store.delete(avatar_id)
        self._evict(avatar_id)

    def _keep_loaded(self, avatar: LoadedAvatar) -> None:
        """Keep a fresh avatar in memory, so the stream that usually follows starts at once.

        Without it the first stream waits for every frame to be read back from disk (seconds for a
        long 720p clip). Failing to keep it costs only that wait, so it never fails the preprocess.
        """
        if self.cache is None:
            return
        try:
            self.cache.adopt(avatar)
        except Exception:
            log.exception("avatar %s was stored but could not be kept in memory", avatar.avatar_id)


class ClusterAvatars(_Shared):
    """Avatars as Avatar resources, built by the operator's Jobs onto the shared volume."""

    def __init__(self, store: AvatarStore, resources: AvatarResources, *, volume: Path, engine: str, fps: float,
                 timeout_s: float, recheck_s: float, metrics: Metrics | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        super().__init__(store, metrics)
        self.resources, self.volume = resources, Path(volume)
        self.check, self.stopping = ServingCheck(resources, recheck_s), stopping
        # Prepared by the engine this server serves with, so that it can load the result.
        self.engine, self.fps, self.timeout_s = engine, fps, timeout_s

    def attach(self, engine: Engine, cache: AvatarCache) -> None:
        self.cache = cache

    def create(self, request: CreateRequest, video: Path) -> PreprocessResult:
        avatar_id = check_resource_name(request.avatar_id)
        sha256 = file_sha256(video)
        relative = upload_name(avatar_id, uuid.uuid4().hex[:8], video.suffix)
        spec = {"videoPath": relative, "bboxShift": request.bbox_shift, "engine": self.engine, "fps": self.fps}
        # 1. a retry of the same request waits for (or finds) the resource already there
        if not request.overwrite and (current := self.resources.get(avatar_id)) is not None:
            return self._existing(avatar_id, current, spec, sha256)
        # 2. keep the upload on the shared volume, where the operator's Job will read it
        os.rename(video, self.volume / relative)  # the caller's own cleanup then finds nothing
        # 3. the Avatar resource
        try:
            generation, replaced = self.resources.submit(avatar_id, spec, relative, request.overwrite,
                                                         annotations={SOURCE_ANNOTATION: sha256})
        except BaseException:
            remove_upload(self.volume, relative)
            raise
        remove_upload(self.volume, replaced)
        # 4. wait for the operator's verdict
        with _timed(self.metrics):
            self.resources.wait_ready(avatar_id, generation, self.timeout_s, self.stopping)
        self._evict(avatar_id)
        return PreprocessResult(avatar_id, AvatarInfo.from_manifest(self.store.manifest(avatar_id)))

    def _existing(self, avatar_id: str, current: dict, spec: dict, sha256: str) -> PreprocessResult:
        """The resource already asks for this avatar: its outcome (waited for if still running)."""
        differences = resource_differences(current, sha256=sha256, spec=spec)
        if differences:
            raise _exists(avatar_id, differences)
        self.resources.wait_ready(avatar_id, int(current["metadata"].get("generation", 1)), self.timeout_s,
                                  self.stopping)
        info = AvatarInfo.from_manifest(self.store.manifest(avatar_id))
        return PreprocessResult(avatar_id, info, ALREADY_PROCESSED)

    def list(self) -> list[AvatarEntry]:
        """The resources, with their phase; `info` while a preprocessed avatar is on the volume
        (an earlier generation's during a spec edit: it is what is served). An avatar being
        deleted is gone already, as the stream and batch routes see it."""
        loaded = self.loaded()
        return [self._entry(item, loaded) for item in self.resources.list() if not _deleting(item)]

    def get(self, avatar_id: str) -> AvatarEntry:
        """One resource, in whatever phase, as it is listed."""
        item = self.resources.get(avatar_id) if _DNS_LABEL.fullmatch(avatar_id) else None
        if item is None or _deleting(item):
            raise AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")
        return self._entry(item, self.loaded())

    def _entry(self, item: dict[str, Any], loaded: set[str]) -> AvatarEntry:
        name, status = item["metadata"]["name"], item.get("status") or {}
        info = AvatarInfo.from_manifest(self.store.manifest(name)) if self.store.exists(name) else None
        return AvatarEntry(name, name in loaded, info, status.get("phase") or "Pending", status.get("message"))

    def uploads_in_use(self) -> set[str]:
        """Volume files the Avatar resources still read (their videoPath and kept upload), which
        the temp sweeper must leave alone. Raises when the resources cannot be listed."""
        used = set()
        for item in self.resources.list():
            annotations = item["metadata"].get("annotations") or {}
            for path in ((item.get("spec") or {}).get("videoPath"), annotations.get(UPLOAD_ANNOTATION)):
                if path:
                    used.add(os.path.normpath(path))
        return used

    def delete(self, avatar_id: str) -> None:
        """Delete the resource; the operator's finalizer then removes the files from the volume."""
        self.resources.delete(check_resource_name(avatar_id))
        self._evict(avatar_id)

    def serving_identity(self, avatar_id: str) -> Identity:
        """The avatar's resource says it may be served (the cache's check): its identity, or AvatarNotFound."""
        if not _DNS_LABEL.fullmatch(avatar_id):  # no resource can have this name
            raise AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")
        return self.check.identity(avatar_id)

    def _evict(self, avatar_id: str) -> None:
        self.check.forget(avatar_id)
        super()._evict(avatar_id)


def _deleting(item: dict[str, Any]) -> bool:
    return bool(item["metadata"].get("deletionTimestamp"))


def _exists(avatar_id: str, differences: list[str]) -> AvatarExists:
    return AvatarExists(f"avatar {avatar_id!r} already exists and {'; '.join(differences)}; "
                        "pass overwrite=true to replace it")


def check_resource_name(avatar_id: str) -> str:
    if not _DNS_LABEL.fullmatch(avatar_id):
        raise InvalidAvatarId(
            f"avatar_id {avatar_id!r}: in cluster mode it names a Kubernetes resource, so it must be "
            "lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric")
    return avatar_id


def crd_engine(serving: str, configured: str) -> str:
    """The engine an Avatar resource asks its Job for: the one serving, else the configured choice."""
    return serving if serving in _CRD_ENGINES else configured


def _timed(metrics: Metrics | None) -> AbstractContextManager[None]:
    return metrics.preprocessing() if metrics else nullcontext()
