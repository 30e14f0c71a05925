"""Request dependencies, as `Annotated` aliases the routes use."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Path, Request

from ..avatars.layout import AVATAR_ID_PATTERN, validate_avatar_id
from ..avatars.service import Avatars
from ..errors import Unauthorized
from ..render.async_jobs import Jobs
from ..render.entry import RenderEntry
from .state import AppState

__all__ = ["StateDep", "AvatarsDep", "RenderingDep", "JobsDep", "AvatarIdPath", "require_api_key"]


def get_state(request: Request) -> AppState:
    return request.app.state.musetalk


StateDep = Annotated[AppState, Depends(get_state)]


def header_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries in its headers: X-API-Key, else Authorization: Bearer."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given


# Where browsers call (the socket, WebRTC) a key may also come as ?key=: they cannot set headers there.
WRONG_KEY_OR_QUERY = "missing or wrong API key (send X-API-Key, Authorization: Bearer, or ?key= from a browser)"


def key_matches(given: str | None, expected: str) -> bool:
    """The one comparison of a presented key, in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(request: Request, state: StateDep) -> None:
    """When MUSETALK_API_KEY is set, every avatar and inference call must carry it."""
    expected = state.settings.api_key
    if expected and not key_matches(header_key(request.headers), expected):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


def get_avatars(state: StateDep) -> Avatars:
    return state.runtime.avatars


def get_rendering(state: StateDep) -> RenderEntry:
    return state.runtime.rendering  # NotReady until the engine has loaded


def get_jobs(state: StateDep) -> Jobs:
    assert state.jobs is not None, "the lifespan builds the jobs registry"
    return state.jobs


# The schema states the pattern; the check stays validate_avatar_id's, so a bad id answers
# invalid_avatar_id (not FastAPI's invalid_input), as everywhere else an id is checked.
def avatar_id_path(avatar_id: Annotated[str, Path(json_schema_extra={"pattern": AVATAR_ID_PATTERN.pattern})]) -> str:
    return validate_avatar_id(avatar_id)


AvatarsDep = Annotated[Avatars, Depends(get_avatars)]
RenderingDep = Annotated[RenderEntry, Depends(get_rendering)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
AvatarIdPath = Annotated[str, Depends(avatar_id_path)]
