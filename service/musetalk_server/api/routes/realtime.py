"""WS /inference/realtime/{avatar_id}: audio in as it is spoken, frames with their audio out.

The socket is accepted first, so that every refusal can carry its `error` event before the
close code (README, "Real-time sessions"); the session itself lives in realtime/session.py.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool

from ...avatars.store import validate_avatar_id
from ...errors import MuseTalkError, Unauthorized
from ...render.realtime.session import (
    IdleFrames,
    RealtimeSession,
    SessionConfig,
    observer_for,
)
from ..deps import header_key, key_matches
from ..state import AppState

router = APIRouter(tags=["inference"])
_IDLE_FRAMES = IdleFrames()  # JPEG cache shared by every session of a renderer; entries die with it


def _check_key(ws: WebSocket, state: AppState) -> None:
    """The X-API-Key header, Authorization: Bearer, or (browsers cannot set headers) `?key=`."""
    expected = state.settings.api_key
    if expected and not key_matches(header_key(ws.headers) or ws.query_params.get("key"), expected):
        raise Unauthorized("missing or wrong API key (send X-API-Key, or ?key= from a browser)")


@router.websocket("/inference/realtime/{avatar_id}")
async def realtime(ws: WebSocket, avatar_id: str) -> None:
    state: AppState = ws.app.state.musetalk
    s = state.settings
    await ws.accept()
    release = None
    try:
        # 1. who, and which avatar
        _check_key(ws, state)
        avatar_id = validate_avatar_id(avatar_id)
        rendering = state.runtime.rendering  # NotReady while the engine loads
        # 2. the avatar, at its own frame rate as every render is, then a place on the device:
        # the scheduler admits a session only if it can keep it on time (else Busy: close 4429)
        # the one existence check, as for every render: AvatarNotFound (close 4404)
        avatar, renderer = await run_in_threadpool(rendering.cache.get, avatar_id)
        h, w = avatar.frames[0].shape[:2]
        ticket = state.runtime.scheduler.admit("realtime", fps=avatar.fps, frame_size=(w, h),
                                               engine=state.engine_name)
        release = ticket.release
        config = SessionConfig(fps=avatar.fps, jpeg_quality=s.jpeg_quality, idle_timeout_s=s.realtime_idle_timeout_s,
                               max_buffer_s=s.realtime_max_buffer_s, max_session_s=s.realtime_max_session_s,
                               max_utterance_s=s.max_audio_seconds)
        session = RealtimeSession(ws, renderer, backgrounds=len(avatar.frames), size=(w, h), config=config,
                                  idle=_IDLE_FRAMES, observer=observer_for(state.metrics, ticket),
                                  turn=ticket.frame_step, name=f"realtime-{avatar_id}")
    except MuseTalkError as e:
        if release is not None:
            release()
        await RealtimeSession.fail_socket(ws, e)
        return
    # 3. the session, until it ends
    state.sessions.add(session)
    state.metrics.realtime_sessions.inc()
    try:
        await session.run()
    finally:
        state.sessions.discard(session)
        state.metrics.realtime_sessions.dec()
        if release is not None:
            release()
