"""Avatar endpoints: preprocess (the seed's), list, show, delete."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ...avatars.preprocess import preprocess_avatar
from ...avatars.store import validate_avatar_id
from ...engines.base import LoadedAvatar
from ...errors import AvatarExists, InvalidInput
from .. import cluster
from ..deps import AvatarIdPath, EngineDep, StateDep, require_api_key
from ..openapi import AVATAR, AVATAR_LIST, DELETED, PREPROCESSED, errors, ok
from ..state import AppState
from ..uploads import saved_upload

log = logging.getLogger(__name__)
router = APIRouter(tags=["avatars"], dependencies=[Depends(require_api_key)], responses=errors(401))

BBOX_SHIFT_LIMIT = 200  # px; beyond this the crop leaves the face on any real clip


def avatar_info(manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("frames", "fps", "width", "height", "bbox_shift", "engine", "engine_version", "face", "source",
            "engine_info", "created_at", "preprocess_seconds")
    info = {k: manifest.get(k) for k in keys}
    info["size"] = [manifest.get("width"), manifest.get("height")]
    return info


@router.post("/avatars/preprocess", responses={**ok(PREPROCESSED), **errors(409, 413, 415, 422, 500, 503, 504)})
async def preprocess(
    state: StateDep,
    engine: EngineDep,
    video_file: Annotated[UploadFile, File(description="Video (mp4, mov, webm, mkv) or still image (png, jpg)")],
    avatar_id: Annotated[str, Form()],
    bbox_shift: Annotated[int, Form()] = 0,
    overwrite: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Turn a video of a face into an avatar. Heavy: runs on a worker thread, one at a time."""
    validate_avatar_id(avatar_id)
    if abs(bbox_shift) > BBOX_SHIFT_LIMIT:
        raise InvalidInput(f"bbox_shift {bbox_shift} is outside [-{BBOX_SHIFT_LIMIT}, {BBOX_SHIFT_LIMIT}]")
    if state.resources is not None:
        return await cluster.preprocess(state, video_file, avatar_id, bbox_shift, overwrite)
    if not overwrite and state.store.exists(avatar_id):
        raise AvatarExists(f"avatar {avatar_id!r} already exists; pass overwrite=true to replace it")
    settings = state.settings
    async with saved_upload(video_file, settings.result_dir / "uploads", settings.max_upload_bytes) as path:
        async with state.preprocess_slots:
            state.metrics.preprocess_active.inc()
            started, outcome = time.perf_counter(), "error"
            try:
                manifest = await run_in_threadpool(
                    preprocess_avatar,
                    path,
                    avatar_id,
                    engine=engine,
                    store=state.store,
                    bbox_shift=bbox_shift,
                    fps=settings.fps,
                    overwrite=overwrite,
                    max_seconds=settings.max_video_seconds,
                    max_side=settings.max_video_side,
                    source_name=video_file.filename,
                    on_stored=keep_loaded(state),
                )
                outcome = "ok"
            finally:
                state.metrics.preprocess_active.dec()
                state.metrics.preprocess_seconds.labels(outcome).observe(time.perf_counter() - started)
    return {"message": "Avatar processed successfully", "avatar_id": avatar_id, "info": avatar_info(manifest)}


def keep_loaded(state: AppState) -> Callable[[LoadedAvatar], None]:
    """Keep a fresh avatar in memory, so the stream that usually follows starts at once.

    Without it the first stream waits for every frame to be read back from disk (seconds for a
    long 720p clip). Failing to keep it costs only that wait, so it never fails the preprocess.
    """
    def keep(avatar: LoadedAvatar) -> None:
        if state.cache is None:
            return
        try:
            state.cache.adopt(avatar)
        except Exception:
            log.exception("avatar %s was stored but could not be kept in memory", avatar.avatar_id)

    return keep


@router.get("/avatars", responses=ok(AVATAR_LIST))
async def list_avatars(state: StateDep) -> dict[str, Any]:
    if state.resources is not None:
        return await cluster.list_avatars(state)
    manifests = await run_in_threadpool(state.store.manifests)
    loaded = set(state.loaded_avatars())
    return {
        "avatars": [
            {"avatar_id": m["avatar_id"], "loaded": m["avatar_id"] in loaded, "info": avatar_info(m)} for m in manifests
        ]
    }


@router.get("/avatars/{avatar_id}", responses={**ok(AVATAR), **errors(404, 422)})
async def show_avatar(state: StateDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    manifest = await run_in_threadpool(state.store.manifest, avatar_id)
    return {"avatar_id": avatar_id, "loaded": avatar_id in state.loaded_avatars(), "info": avatar_info(manifest)}


@router.delete("/avatars/{avatar_id}", responses={**ok(DELETED), **errors(404, 422)})
async def delete_avatar(state: StateDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    if state.resources is not None:
        return await cluster.delete_avatar(state, avatar_id)
    await run_in_threadpool(state.store.delete, avatar_id)
    if state.cache:
        state.cache.evict(avatar_id)
    return {"message": "Avatar deleted", "avatar_id": avatar_id}
