"""Avatar endpoints: preprocess (the seed's), list, show, delete. Thin: avatars/service.py does the work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ...avatars.service import CreateRequest
from ..deps import AvatarIdPath, AvatarsDep, StateDep, require_api_key
from ..openapi import AVATAR, AVATAR_LIST, DELETED, PREPROCESSED, errors, ok
from ..uploads import saved_upload

router = APIRouter(tags=["avatars"], dependencies=[Depends(require_api_key)], responses=errors(401))


@router.post("/avatars/preprocess", responses={**ok(PREPROCESSED), **errors(409, 413, 415, 422, 429, 500, 503, 504, 507)})
async def preprocess(
    state: StateDep,
    avatars: AvatarsDep,
    video_file: Annotated[UploadFile, File(description="Video (mp4, mov, webm, mkv) or still image (png, jpg)")],
    avatar_id: Annotated[str, Form()],
    bbox_shift: Annotated[int, Form()] = 0,
    overwrite: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Turn a video of a face into an avatar. Heavy: runs on a worker thread, one at a time."""
    request = CreateRequest(avatar_id, bbox_shift, overwrite, video_file.filename)
    settings = state.settings
    async with saved_upload(video_file, settings.result_dir / "uploads", settings.max_upload_bytes) as path:
        result = await run_in_threadpool(avatars.create, request, path)
    return result.to_dict()


@router.get("/avatars", responses=ok(AVATAR_LIST))
async def list_avatars(avatars: AvatarsDep) -> dict[str, Any]:
    entries = await run_in_threadpool(avatars.list)
    return {"avatars": [entry.to_dict() for entry in entries]}


@router.get("/avatars/{avatar_id}", responses={**ok(AVATAR), **errors(404, 422)})
async def show_avatar(avatars: AvatarsDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    return (await run_in_threadpool(avatars.get, avatar_id)).to_dict()


@router.delete("/avatars/{avatar_id}", responses={**ok(DELETED), **errors(404, 422)})
async def delete_avatar(avatars: AvatarsDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    await run_in_threadpool(avatars.delete, avatar_id)
    return {"message": "Avatar deleted", "avatar_id": avatar_id}
