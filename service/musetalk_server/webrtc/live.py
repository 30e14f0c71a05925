"""The service's WebRTC side: live sessions by id, and the peer connections that watch or feed them.

Every real-time session, whichever transport feeds it, is registered here under a random id
(its `ready` event's `session_id`) with a viewer token (`viewer_token`, valid for
MUSETALK_WEBRTC_VIEWER_TOKEN_TTL_S) that lets a viewer join without the API key. The first peer
gives the session a `Broadcast` (broadcast.py), attached to it as a frame sink; each peer is a
viewer of it. A peer that fails or closes (ICE consent lost, DTLS closed, DELETE) is dropped at
once: its tracks end, its encoder goes with the last viewer of its codec, and a feeder's
leaving ends its session. A session's end drops all its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from ..config import Settings
from ..errors import InvalidOffer, SessionNotFound, TooManyViewers
from ..render.realtime.session import RealtimeSession
from .broadcast import Broadcast, Viewer
from .encoders import VideoOptions
from .offer import Offer, Role
from .transport import WebRtcTransport

__all__ = ["LiveSession", "Peer", "WebRtc", "ice_servers"]

log = logging.getLogger(__name__)
_CONSENT_INTERVAL_S = 1  # aioice's own is 5 s with 6 misses: a vanished peer would hold on for 30 s


@dataclass
class Peer:
    id: str
    role: Role
    pc: RTCPeerConnection
    viewer: Viewer


@dataclass
class LiveSession:
    id: str
    token: str
    token_expires: float  # monotonic seconds
    session: RealtimeSession | None = None
    feeder: WebRtcTransport | None = None  # a session fed over WebRTC: the peer's transport
    broadcast: Broadcast | None = None
    peers: dict[str, Peer] = field(default_factory=dict)
    ended: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # set once its device place is given back

    @property
    def ready_facts(self) -> dict[str, Any]:
        return {"session_id": self.id, "viewer_token": self.token}

    def viewers(self) -> int:
        return sum(p.role == "viewer" for p in self.peers.values())

    def token_valid(self, given: str | None) -> bool:
        return (given is not None and time.monotonic() < self.token_expires
                and secrets.compare_digest(given.encode(), self.token.encode()))


def ice_servers(s: Settings) -> list[RTCIceServer]:
    """MUSETALK_WEBRTC_ICE_SERVERS as aiortc's list; the TURN credentials go with every turn(s): URL."""
    servers = []
    for url in (u.strip() for u in s.webrtc_ice_servers.split(",")):
        if url.startswith(("turn:", "turns:")):
            servers.append(RTCIceServer(url, username=s.webrtc_turn_username, credential=s.webrtc_turn_credential))
        elif url:
            servers.append(RTCIceServer(url))
    return servers


class WebRtc:
    def __init__(self, settings: Settings, metrics: Any) -> None:
        self.settings, self.metrics = settings, metrics
        # An empty list, not None: aiortc's default is Google's STUN server, which a cluster may not reach.
        self.ice_servers = ice_servers(settings)
        self.options = VideoOptions(crf=settings.webrtc_video_crf, max_kbps=settings.webrtc_max_video_kbps,
                                    keyframe_s=4.0, preset=settings.webrtc_x264_preset)
        # aioice reads these module constants at each check: one setting for every connection. A missed
        # check costs the interval and the check's own timeout (one STUN RTO, no retransmission).
        aioice.ice.CONSENT_INTERVAL = _CONSENT_INTERVAL_S
        aioice.ice.CONSENT_FAILURES = max(2, round(settings.webrtc_consent_timeout_s
                                                   / (_CONSENT_INTERVAL_S + aioice.stun.RETRY_RTO)))
        self.sessions: dict[str, LiveSession] = {}

    # --- sessions ----------------------------------------------------------------------------

    def open(self) -> LiveSession:
        """A new session's id and viewer token (before its `ready` event, which carries them)."""
        live = LiveSession(secrets.token_urlsafe(12), secrets.token_urlsafe(18),
                           time.monotonic() + self.settings.webrtc_viewer_token_ttl_s)
        self.sessions[live.id] = live
        return live

    def find(self, session_id: str) -> LiveSession:
        live = self.sessions.get(session_id)
        if live is None or live.ended:
            raise SessionNotFound(f"no live session {session_id!r}")
        return live

    async def close(self, live: LiveSession) -> None:
        """The session ended: every peer goes, and the broadcast's encoders."""
        live.ended = True
        self.sessions.pop(live.id, None)
        for peer_id in list(live.peers):
            await self.drop(live, peer_id)
        if live.broadcast is not None:
            if live.session is not None:
                live.session.detach(live.broadcast)
            await live.broadcast.close()

    async def close_all(self) -> None:
        for live in list(self.sessions.values()):
            if live.session is not None:
                live.session.stop()
            await self.close(live)

    # --- peers -------------------------------------------------------------------------------

    async def connect(self, live: LiveSession, offer: Offer, role: Role) -> tuple[Peer, str]:
        """A peer for `offer` watching (and, as the feeder, feeding) `live`: (the peer, the SDP answer
        with every candidate gathered). InvalidOffer if aiortc cannot answer it."""
        if role == "viewer" and live.viewers() >= self.settings.webrtc_max_viewers:
            raise TooManyViewers(f"session {live.id!r} has MUSETALK_WEBRTC_MAX_VIEWERS = "
                                 f"{self.settings.webrtc_max_viewers} viewers already")
        assert live.session is not None
        if live.broadcast is None:
            live.broadcast = Broadcast(fps=live.session.fps, options=self.options, metrics=self.metrics)
            live.session.attach(live.broadcast)
        broadcast = live.broadcast
        viewer = broadcast.add(offer.video_codec)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        peer = Peer(secrets.token_urlsafe(12), role, pc, viewer)
        try:
            video = pc.addTransceiver(viewer.video, direction="sendonly")
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType in (f"video/{offer.video_codec}", "video/rtx")])
            feeds = role == "feeder" and offer.sends_audio
            audio = pc.addTransceiver(viewer.audio, direction="sendrecv" if feeds else "sendonly")
            for sender in (video.sender, audio.sender):
                sender._send_keyframe = broadcast.request_keyframe  # type: ignore[method-assign]  # PLI/FIR
            if role == "feeder":
                assert live.feeder is not None
                self._wire_feeder(pc, live.feeder)
            self._watch(live, peer)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers every candidate here
            except (ValueError, LookupError) as e:
                raise InvalidOffer(f"the offer cannot be answered: {e}") from e
            except Exception as e:  # aiortc's InvalidAccessError, OperationError, InvalidStateError
                if type(e).__module__.startswith("aiortc"):
                    raise InvalidOffer(f"the offer cannot be answered: {e}") from e
                raise
        except BaseException:
            broadcast.remove(viewer)
            await pc.close()
            raise
        live.peers[peer.id] = peer
        self.metrics.webrtc_peers.labels(role).inc()
        return peer, pc.localDescription.sdp

    def _wire_feeder(self, pc: RTCPeerConnection, transport: WebRtcTransport) -> None:
        @pc.on("datachannel")
        def _channel(channel: Any) -> None:
            transport.use_channel(channel)

        @pc.on("track")
        def _track(track: Any) -> None:
            if track.kind == "audio":
                transport.hear(track)

    def _watch(self, live: LiveSession, peer: Peer) -> None:
        @peer.pc.on("connectionstatechange")
        async def _state() -> None:
            if peer.pc.connectionState in ("failed", "closed"):
                await self.drop(live, peer.id)

    async def drop(self, live: LiveSession, peer_id: str) -> None:
        """The peer leaves (DELETE, ICE failed or closed): its tracks, its connection, and a feeder's session."""
        peer = live.peers.pop(peer_id, None)
        if peer is None:
            return
        self.metrics.webrtc_peers.labels(peer.role).dec()
        if live.broadcast is not None:
            live.broadcast.remove(peer.viewer)
        if peer.role == "feeder" and live.feeder is not None:
            live.feeder.close()
        with contextlib.suppress(Exception):
            await peer.pc.close()

    def find_peer(self, live: LiveSession, peer_id: str) -> Peer:
        peer = live.peers.get(peer_id)
        if peer is None:
            raise SessionNotFound(f"session {live.id!r} has no peer {peer_id!r}")
        return peer

