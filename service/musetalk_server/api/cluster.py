"""The avatar routes' cluster-mode branch (MUSETALK_AVATAR_SOURCE=kubernetes).

POST /avatars/preprocess answers exactly as in local mode: it blocks until the operator reports
the Avatar Ready (bounded by MUSETALK_PREPROCESS_TIMEOUT_S, then 504 preprocess_timeout while the
Job carries on). Why not 202 + a status URL: clients written against the seed API keep working
unchanged, and GET /avatars already shows the phase for anyone who prefers to poll.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from typing import Any

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from ..avatars.kube import remove_upload, upload_name
from ..errors import InvalidAvatarId
from .state import AppState
from .uploads import saved_upload

__all__ = ["preprocess", "list_avatars", "delete_avatar"]

# Resource names are DNS labels: a stricter subset of the local id pattern.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CRD_ENGINES = ("lite", "musetalk")


def check_resource_name(avatar_id: str) -> None:
    if not _DNS_LABEL.fullmatch(avatar_id):
        raise InvalidAvatarId(
            f"avatar_id {avatar_id!r}: in cluster mode it names a Kubernetes resource, so it must be "
            "lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumeric")


async def preprocess(state: AppState, video_file: UploadFile, avatar_id: str, bbox_shift: int,
                     overwrite: bool) -> dict[str, Any]:
    from .routes.avatars import avatar_info

    check_resource_name(avatar_id)
    settings, resources = state.settings, state.resources
    # 1. keep the upload on the shared volume, where the operator's Job will read it
    async with saved_upload(video_file, settings.result_dir / "uploads", settings.max_upload_bytes) as tmp:
        relative = upload_name(avatar_id, uuid.uuid4().hex[:8], tmp.suffix)
        os.rename(tmp, settings.result_dir / relative)  # saved_upload's own cleanup then finds nothing
    # 2. the Avatar resource; prepared by the engine this server serves with, so it can load it
    engine = state.engine_name if state.engine_name in _CRD_ENGINES else settings.engine
    spec = {"videoPath": relative, "bboxShift": bbox_shift, "engine": engine, "fps": settings.fps}
    try:
        generation, replaced = await asyncio.to_thread(resources.submit, avatar_id, spec, relative, overwrite)
    except BaseException:
        remove_upload(settings.result_dir, relative)
        raise
    remove_upload(settings.result_dir, replaced)
    # 3. wait for the operator's verdict
    state.metrics.preprocess_active.inc()
    started, outcome = time.perf_counter(), "error"
    try:
        await resources.wait_ready(avatar_id, generation, settings.preprocess_timeout_s)
        outcome = "ok"
    finally:
        state.metrics.preprocess_active.dec()
        state.metrics.preprocess_seconds.labels(outcome).observe(time.perf_counter() - started)
    if state.cache:
        state.cache.evict(avatar_id)
    manifest = await run_in_threadpool(state.store.manifest, avatar_id)
    return {"message": "Avatar processed successfully", "avatar_id": avatar_id, "info": avatar_info(manifest)}


async def list_avatars(state: AppState) -> dict[str, Any]:
    """The resources, with their phase; `info` once the avatar is on the volume."""
    from .routes.avatars import avatar_info

    items = await asyncio.to_thread(state.resources.list)
    loaded = set(state.loaded_avatars())
    avatars = []
    for item in items:
        name, status = item["metadata"]["name"], item.get("status") or {}
        entry: dict[str, Any] = {"avatar_id": name, "loaded": name in loaded,
                                 "phase": status.get("phase") or "Pending", "message": status.get("message")}
        if entry["phase"] == "Ready" and await run_in_threadpool(state.store.exists, name):
            entry["info"] = avatar_info(await run_in_threadpool(state.store.manifest, name))
        avatars.append(entry)
    return {"avatars": avatars}


async def delete_avatar(state: AppState, avatar_id: str) -> dict[str, Any]:
    """Delete the resource; the operator's finalizer then removes the files from the volume."""
    check_resource_name(avatar_id)
    await asyncio.to_thread(state.resources.delete, avatar_id)
    if state.cache:
        state.cache.evict(avatar_id)
    return {"message": "Avatar deleted", "avatar_id": avatar_id}
