"""Request dependencies, as `Annotated` aliases the routes use."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request

from ..avatars.cache import AvatarCache
from ..avatars.store import validate_avatar_id
from ..engines.base import Engine
from ..errors import NotReady, Unauthorized
from .state import AppState

__all__ = ["StateDep", "EngineDep", "CacheDep", "AvatarIdPath", "require_api_key"]


def get_state(request: Request) -> AppState:
    return request.app.state.musetalk


StateDep = Annotated[AppState, Depends(get_state)]


def require_api_key(request: Request, state: StateDep) -> None:
    """When MUSETALK_API_KEY is set, every avatar and inference call must carry it."""
    expected = state.settings.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send X-API-Key or Authorization: Bearer)")


def get_engine(state: StateDep) -> Engine:
    if state.engine is None:
        raise NotReady(state.load_error or "the engine is still loading")
    return state.engine


def get_cache(state: StateDep, engine: Annotated[Engine, Depends(get_engine)]) -> AvatarCache:
    assert state.cache is not None
    return state.cache


def avatar_id_path(avatar_id: Annotated[str, Path()]) -> str:
    return validate_avatar_id(avatar_id)


EngineDep = Annotated[Engine, Depends(get_engine)]
CacheDep = Annotated[AvatarCache, Depends(get_cache)]
AvatarIdPath = Annotated[str, Depends(avatar_id_path)]
