"""WS /inference/realtime/{avatar_id}: audio in as it is spoken, frames with their audio out.

The socket is accepted first, so that every refusal can carry its `error` event before the
close code (docs/realtime.md, "Close codes"). Then: check the key, the avatar id and the
`sample_rate` query parameter (before a device place is taken), open the render through the one
entry, hand it to the session core (render/realtime/session.py) over the WebSocket transport
(api/realtime_socket.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket

from ...avatars.store import validate_avatar_id
from ...config import Settings
from ...errors import MuseTalkError, Unauthorized
from ...render.entry import Render
from ...render.realtime.protocol import rate_from_query
from ...render.realtime.session import IdleFrames, RealtimeSession, SessionConfig, observer_for
from ...render.realtime.transport import SessionTransport
from ...webrtc.live import LiveSession
from ..deps import WRONG_KEY_OR_QUERY, header_key, key_matches
from ..realtime_socket import WebSocketTransport
from ..state import AppState

router = APIRouter(tags=["inference"])
_IDLE_FRAMES = IdleFrames()  # idle frames shared by every session of a renderer; entries die with it


def _check_key(ws: WebSocket, state: AppState) -> None:
    """The X-API-Key header, Authorization: Bearer, or (browsers cannot set headers) `?key=`."""
    expected = state.settings.api_key
    if expected and not key_matches(header_key(ws.headers) or ws.query_params.get("key"), expected):
        raise Unauthorized(WRONG_KEY_OR_QUERY)


def session_config(s: Settings) -> SessionConfig:
    return SessionConfig(jpeg_quality=s.jpeg_quality, idle_timeout_s=s.realtime_idle_timeout_s,
                         max_buffer_s=s.realtime_max_buffer_s, max_session_s=s.realtime_max_session_s,
                         max_utterance_s=s.max_audio_seconds)


@router.websocket("/inference/realtime/{avatar_id}")
async def realtime(ws: WebSocket, avatar_id: str) -> None:
    state: AppState = ws.app.state.musetalk
    transport = WebSocketTransport(ws)
    await ws.accept()
    try:
        # 1. who, which avatar, and at what audio rate
        _check_key(ws, state)
        avatar_id = validate_avatar_id(avatar_id)
        sample_rate = rate_from_query(ws.query_params.get("sample_rate"))
        # 2. open: the avatar at its own frame rate (close 4404 if none), and a place on the device
        # only if it can keep the session on time (Busy: close 4429); NotReady while loading
        render = await state.runtime.rendering.open_async(avatar_id, "realtime")
    except MuseTalkError as e:
        await transport.fail(e)
        return
    # 3. the session, until it ends (WebRTC viewers may join it by its id)
    live = state.webrtc.open()
    session = new_session(state, transport, render, live, config=session_config(state.settings),
                          sample_rate=sample_rate)
    await run_session(state, session, render, live)
    if transport.connected:  # ended from outside (DELETE of its WebRTC resource, shutdown): a normal close
        with contextlib.suppress(Exception):
            await ws.close(code=1000)


def new_session(state: AppState, transport: SessionTransport, render: Render, live: LiveSession, *,
                config: SessionConfig, sample_rate: int) -> RealtimeSession:
    """A session over an admitted `render`, registered as `live` (its `ready` event carries the id)."""
    session = RealtimeSession(transport, render, config=config, idle=_IDLE_FRAMES, sample_rate=sample_rate,
                              observer=observer_for(state.metrics, render.ticket),
                              name=f"realtime-{render.avatar_id}", ready=live.ready_facts)
    live.session = session
    return session


async def run_session(state: AppState, session: RealtimeSession, render: Render, live: LiveSession) -> Any:
    """Serve the session until it ends, whatever its transport; leaving the `with` gives the device
    place back, and the session's WebRTC peers go with it."""
    try:
        with render:
            state.sessions.add(session)
            state.metrics.realtime_sessions.inc()
            try:
                await session.run()
            finally:
                state.sessions.discard(session)
                state.metrics.realtime_sessions.dec()
                await state.webrtc.close(live)
    finally:
        live.finished.set()
