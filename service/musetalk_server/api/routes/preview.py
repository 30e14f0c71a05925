"""`GET /avatars/{id}/preview.jpg`: the avatar's first frame, for thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...avatars.layout import not_found
from ...avatars.store import read_frame
from ...media.jpeg import encode_jpeg
from ..deps import AvatarIdPath, StateDep, key_matches, require_api_key
from ..openapi import JPEG_RESPONSE, error_responses

router = APIRouter(tags=["avatars"])


def require_api_key_or_query(
    request: Request, state: StateDep,
    key: Annotated[str | None, Query(description="The API key, for an <img> that cannot send headers")] = None,
) -> None:
    """As require_api_key, and the `key` query parameter also counts: a browser's <img> sends no headers."""
    expected = state.settings.api_key
    if expected and key_matches(key, expected):
        return
    require_api_key(request, state)


@router.get("/avatars/{avatar_id}/preview.jpg", dependencies=[Depends(require_api_key_or_query)],
            response_class=Response, responses={**JPEG_RESPONSE, **error_responses("keyed", "avatar", "reads_avatar")})
async def preview(state: StateDep, avatar_id: AvatarIdPath) -> Response:
    """The avatar's first frame as a JPEG."""
    if not state.runtime.store.exists(avatar_id):
        raise not_found(avatar_id)
    frame = await run_in_threadpool(read_frame, state.runtime.store.path(avatar_id), 0)
    jpeg = await run_in_threadpool(encode_jpeg, frame, state.settings.jpeg_quality)
    # An avatar can be overwritten under the same id: revalidate rather than cache blindly.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})
