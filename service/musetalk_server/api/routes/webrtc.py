"""WebRTC: a real-time session over a peer connection (WHEP-style: POST an offer, 201 with the
answer and a Location, DELETE the Location to leave). docs/webrtc.md has the contract.

- `POST /inference/webrtc/{avatar_id}`: a new session of the avatar, fed by this peer's
  microphone and data channel (webrtc/transport.py), admitted on the device as the WebSocket's
  is; Location `/inference/webrtc/sessions/{session_id}`, whose DELETE ends the session.
- `POST /inference/webrtc/sessions/{session_id}`: a viewer of a live session, however it is fed;
  Location `/inference/webrtc/sessions/{session_id}/viewers/{viewer_id}`, whose DELETE leaves.
A viewer is authorised by the API key or by the session's `viewer_token` (`?token=`, or
`X-Viewer-Token`), which joins only while it is fresh; the key as everywhere else (header, or
`?key=` from a browser).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from ...errors import InvalidOffer, MuseTalkError, NotSdp, Unauthorized
from ...render.entry import Render
from ...render.realtime.session import RealtimeSession
from ...webrtc.live import LiveSession
from ...webrtc.offer import Offer, Role, check_offer
from ...webrtc.transport import MIC_RATE, WebRtcTransport
from ..deps import WRONG_KEY_OR_QUERY, AvatarIdPath, StateDep, header_key, key_matches
from ..models import WebRtcDeleted
from ..openapi import error_responses
from ..state import AppState
from .realtime import new_session, run_session, session_config

router = APIRouter(tags=["webrtc"])
SDP = "application/sdp"
_END_WAIT_S = 5.0  # a session ends within a frame's render; this bounds a stuck one
_SDP_BODY = {"requestBody": {"required": True, "content": {SDP: {"schema": {"type": "string"}}}}}
_ANSWER: dict[int | str, dict[str, Any]] = {201: {
    "description": "The SDP answer, every ICE candidate in it; `Location` names the new resource",
                 "content": {SDP: {"schema": {"type": "string"}}},
                 "headers": {"Location": {"schema": {"type": "string"}}}}}
# Ids are secrets.token_urlsafe (webrtc/live.py): anything else is refused as invalid_input, not looked up.
SessionIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _given_key(request: Request) -> str | None:
    return header_key(request.headers) or request.query_params.get("key")


def require_key(request: Request, state: StateDep) -> None:
    """The API key, as a header or (browsers' fetch to another origin may not set one) `?key=`."""
    expected = state.settings.api_key
    if expected and not key_matches(_given_key(request), expected):
        raise Unauthorized(WRONG_KEY_OR_QUERY)


def _viewer_authorised(*, fresh: bool) -> Callable[[Request, AppState], None]:
    """A dependency: the request may view its `session_id` with the API key, or with the session's viewer
    token (`fresh`: not expired). Without either, an unknown (or malformed) id is 401 like a known
    one, so ids cannot be probed; as a dependency it is checked before the path, as the key is elsewhere."""

    def check(request: Request, state: StateDep) -> None:
        expected = state.settings.api_key
        if not expected or key_matches(_given_key(request), expected):
            return
        live = state.webrtc.sessions.get(request.path_params.get("session_id", ""))
        token = request.query_params.get("token") or request.headers.get("x-viewer-token")
        if live is not None and (live.token_valid(token) if fresh else token == live.token):
            return
        raise Unauthorized("missing or wrong API key or viewer token (send X-API-Key, Authorization: Bearer, "
                           "?key=, or the session's viewer_token as ?token= or X-Viewer-Token)")

    return check


async def _offer(request: Request, role: Role) -> Offer:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != SDP:
        raise NotSdp(f"an offer is {SDP}, got {kind or 'no Content-Type'}")
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidOffer("the SDP offer is not UTF-8 text") from e
    return check_offer(text, role)


def _answer(sdp: str, location: str) -> Response:
    return Response(sdp, status_code=201, media_type=SDP, headers={"Location": location, "Cache-Control": "no-store"})


@router.post("/inference/webrtc/{avatar_id}", status_code=201, dependencies=[Depends(require_key)],
             responses={**_ANSWER, **error_responses("keyed", "sdp_offer", "realtime_open")}, openapi_extra=_SDP_BODY)
async def create_session(request: Request, state: StateDep, avatar_id: AvatarIdPath) -> Response:
    """A real-time session of the avatar over WebRTC, fed by this peer: its microphone is what the avatar
    speaks (a voice gate cuts utterances), its data channel takes the socket's JSON messages."""
    # 1. the offer: a video receiver, audio that sends or receives, codecs we have
    offer = await _offer(request, "feeder")
    # 2. the avatar, and a place on the device only if the session can be kept on time (429 busy)
    render = await state.runtime.rendering.open_async(avatar_id, "realtime")
    # 3. the session (not started) and its feeding peer; a failed answer gives the place back
    live = state.webrtc.open()
    live.feeder = WebRtcTransport()
    s = state.settings
    # A peer's liveness is ICE consent, not messages: a person may stay silent in front of the avatar.
    config = replace(session_config(s), idle_timeout_s=s.realtime_max_session_s)
    session = new_session(state, live.feeder, render, live, config=config, sample_rate=MIC_RATE)
    try:
        try:
            await session.open_frames()  # an engine without live rendering fails here, as a 500
        except NotImplementedError as e:
            raise MuseTalkError("the session failed; the server log has the details") from e
        _, answer = await state.webrtc.connect(live, offer, "feeder")
    except BaseException:
        session.worker.shutdown(wait=False)
        render.close()
        await state.webrtc.close(live)
        raise
    # 4. the session runs past this request, until its peer leaves or DELETE
    _run_in_background(state, session, render, live)
    return _answer(answer, f"/inference/webrtc/sessions/{live.id}")


def _run_in_background(state: AppState, session: RealtimeSession, render: Render, live: LiveSession) -> None:
    task = asyncio.create_task(run_session(state, session, render, live))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


@router.delete("/inference/webrtc/sessions/{session_id}", response_model=WebRtcDeleted,
               dependencies=[Depends(require_key)], responses=error_responses("keyed", "live_session"))
async def end_session(state: StateDep, session_id: SessionIdPath) -> dict[str, Any]:
    """End the session, however it is fed (a feeding socket gets a normal close); its peers go with it."""
    live = state.webrtc.find(session_id)
    assert live.session is not None
    live.session.stop()
    await state.webrtc.close(live)
    with contextlib.suppress(TimeoutError):  # answered once its device place is free again
        await asyncio.wait_for(live.finished.wait(), _END_WAIT_S)
    return {"message": "Session ended", "session_id": live.id}


@router.post("/inference/webrtc/sessions/{session_id}", status_code=201,
             dependencies=[Depends(_viewer_authorised(fresh=True))],
             responses={**_ANSWER, **error_responses("keyed", "sdp_offer", "live_session", "viewer_join")},
             openapi_extra=_SDP_BODY)
async def add_viewer(request: Request, state: StateDep, session_id: SessionIdPath) -> Response:
    """Watch a live session (both transceivers `recvonly`): the same video and audio as its other peers,
    from one encoder, starting at a key frame."""
    live = state.webrtc.find(session_id)
    offer = await _offer(request, "viewer")
    peer, answer = await state.webrtc.connect(live, offer, "viewer")
    return _answer(answer, f"/inference/webrtc/sessions/{live.id}/viewers/{peer.id}")


@router.delete("/inference/webrtc/sessions/{session_id}/viewers/{viewer_id}", response_model=WebRtcDeleted,
               dependencies=[Depends(_viewer_authorised(fresh=False))],
               responses=error_responses("keyed", "live_session"))
async def remove_viewer(state: StateDep, session_id: SessionIdPath,
                        viewer_id: SessionIdPath) -> dict[str, Any]:
    """Leave: the viewer's connection closes now (the session goes on)."""
    live = state.webrtc.find(session_id)
    peer = state.webrtc.find_peer(live, viewer_id)
    await state.webrtc.drop(live, peer.id)
    return {"message": "Viewer left", "session_id": live.id, "viewer_id": peer.id}
