"""Avatar endpoints: preprocess (the seed's), list, show, delete. Thin: avatars/service.py does the work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ...avatars.layout import AVATAR_ID_PATTERN
from ...avatars.service import BBOX_SHIFT_LIMIT, CreateRequest
from ...errors import MethodNotAllowed
from ..deps import AvatarIdPath, AvatarsDep, StateDep, require_api_key
from ..models import Avatar, AvatarList, Deleted, Preprocessed
from ..openapi import error_responses
from ..uploads import saved_upload

router = APIRouter(tags=["avatars"], dependencies=[Depends(require_api_key)], responses=error_responses("keyed"))

# The checks stay the service's (invalid_avatar_id, invalid_input with the limit); the schema says them too.
AvatarIdForm = Annotated[str, Form(json_schema_extra={"pattern": AVATAR_ID_PATTERN.pattern})]
BboxShiftForm = Annotated[int, Form(description="Moves the face box down (positive) or up (negative), in pixels",
                                    json_schema_extra={"minimum": -BBOX_SHIFT_LIMIT, "maximum": BBOX_SHIFT_LIMIT})]


@router.post("/avatars/preprocess", response_model=Preprocessed, response_model_exclude_unset=True,
             responses=error_responses("upload", "preprocess", "device"))
async def preprocess(
    state: StateDep,
    avatars: AvatarsDep,
    video_file: Annotated[UploadFile, File(description="Video (mp4, mov, webm, mkv) or still image (png, jpg)")],
    avatar_id: AvatarIdForm,
    bbox_shift: BboxShiftForm = 0,
    overwrite: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Turn a video of a face into an avatar. Heavy: runs on a worker thread, one at a time."""
    request = CreateRequest(avatar_id, bbox_shift, overwrite, video_file.filename)
    settings = state.settings
    async with saved_upload(video_file, settings.result_dir / "uploads", settings.max_upload_bytes) as path:
        result = await run_in_threadpool(avatars.create, request, path)
    return result.to_dict()


# `/avatars/preprocess` is a path of its own, not an avatar: its other methods answer 405, as any
# path's do, rather than "avatar 'preprocess' does not exist" from the route below.
@router.api_route("/avatars/preprocess", methods=["GET", "DELETE"], include_in_schema=False)
async def preprocess_other_methods() -> None:
    raise HTTPException(MethodNotAllowed.status)


@router.get("/avatars", response_model=AvatarList, response_model_exclude_unset=True)
async def list_avatars(avatars: AvatarsDep) -> dict[str, Any]:
    entries = await run_in_threadpool(avatars.list)
    return {"avatars": [entry.to_dict() for entry in entries]}


@router.get("/avatars/{avatar_id}", response_model=Avatar, response_model_exclude_unset=True,
            responses=error_responses("avatar", "reads_avatar"))
async def show_avatar(avatars: AvatarsDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    return (await run_in_threadpool(avatars.get, avatar_id)).to_dict()


@router.delete("/avatars/{avatar_id}", response_model=Deleted, responses=error_responses("avatar"))
async def delete_avatar(avatars: AvatarsDep, avatar_id: AvatarIdPath) -> dict[str, Any]:
    await run_in_threadpool(avatars.delete, avatar_id)
    return {"message": "Avatar deleted", "avatar_id": avatar_id}
