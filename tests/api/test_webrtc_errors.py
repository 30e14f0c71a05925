"""WebRTC refusals over real HTTP: each bad request's exact status and body, and nothing left behind.

The server is keyed, holds one real-time session at a time (MUSETALK_MAX_REALTIME_STREAMS=1, the
device scheduler's cap) and one viewer per session; its engine is the fake one with live
rendering. Offers come from aiortc as a client makes them; these peers never connect, since the
answer is the point here (tests/api/test_webrtc_media.py connects).
"""

from __future__ import annotations

import httpx
import pytest

from fakes import FakeEngine
from helpers import media
from servers import make_server
from testkit.mediatools import write_still
from testkit.webrtc_peer import offer_sdp

KEY = "rtc-secret"
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    d = tmp_path_factory.mktemp("webrtc")
    still = d / "face.png"
    write_still(media("vr_face2.mp4"), still)
    with make_server(d, FakeEngine(live=True), api_key=KEY, max_realtime_streams=1, webrtc_max_viewers=1) as server, \
            httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as client:
        with still.open("rb") as f:
            assert client.post("/avatars/preprocess", data={"avatar_id": "face"},
                               files={"video_file": (still.name, f)}).status_code == 200
        yield server, client


@pytest.fixture(scope="module")
def offers():
    return {"feeder": offer_sdp(), "viewer": offer_sdp(feeder=False)}


def state(server):
    return server.server.config.app.state.musetalk


def gauges(client) -> dict[str, float]:
    """The WebRTC and real-time gauges of /metrics, by sample name and labels."""
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(("musetalk_webrtc_peers", "musetalk_webrtc_encoders", "musetalk_realtime_sessions")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def without(sdp: str, kind: str) -> str:
    """The offer with its `kind` media section cut out (and out of the BUNDLE group)."""
    head, *sections = sdp.split("\r\nm=")
    kept = [m for m in sections if not m.startswith(kind)]
    mids = [line[6:] for m in kept for line in m.split("\r\n") if line.startswith("a=mid:")]
    head = "\r\n".join(f"a=group:BUNDLE {' '.join(mids)}" if line.startswith("a=group:BUNDLE") else line
                        for line in head.split("\r\n"))
    return "\r\nm=".join([head, *kept])


def error(r: httpx.Response) -> tuple[int, dict]:
    return r.status_code, r.json()


def test_refusals_have_exact_statuses_and_bodies(api, offers):
    server, client = api
    create = "/inference/webrtc/face"
    feeder, viewer = offers["feeder"], offers["viewer"]
    assert error(client.post(create, content="v=0\r\n", headers={"Content-Type": "text/plain"})) == (415, {
        "detail": "an offer is application/sdp, got text/plain", "code": "unsupported_media"})
    assert error(client.post(create, content="hello", headers=SDP)) == (422, {
        "detail": "the body is not an SDP offer: it must begin with `v=0`", "code": "invalid_sdp"})
    assert error(client.post(create, content="v=0\r\nm=video abc", headers=SDP))[1]["code"] == "invalid_sdp"
    assert error(client.post(create, content="v=0\r\nthis is not sdp", headers=SDP)) == (422, {
        "detail": "the SDP offer has no media sections (`m=` lines): it needs an audio and a video one",
        "code": "invalid_sdp"})
    assert error(client.post(create, content=without(feeder, "video"), headers=SDP)) == (422, {
        "detail": "the offer needs a video transceiver that receives (`recvonly`); it has none", "code": "invalid_sdp"})
    assert error(client.post(create, content=without(feeder, "audio"), headers=SDP)) == (422, {
        "detail": "the offer needs an audio transceiver that is sendrecv or recvonly; it has none",
        "code": "invalid_sdp"})
    assert error(httpx.post(f"{server.url}{create}", content=feeder, headers=SDP)) == (401, {
        "detail": "missing or wrong API key (send X-API-Key, Authorization: Bearer, or ?key= from a browser)",
        "code": "unauthorized"})
    assert error(httpx.post(f"{server.url}{create}?key=wrong", content=feeder, headers=SDP))[0] == 401
    assert error(client.post("/inference/webrtc/nobody", content=feeder, headers=SDP)) == (404, {
        "detail": "avatar 'nobody' does not exist; preprocess it first", "code": "avatar_not_found"})
    unknown = "/inference/webrtc/sessions/no-such-session"
    assert error(client.post(unknown, content=viewer, headers=SDP)) == (404, {
        "detail": "no live session 'no-such-session'", "code": "session_not_found"})
    assert error(httpx.post(f"{server.url}{unknown}", content=viewer, headers=SDP)) == (401, {
        "detail": "missing or wrong API key or viewer token (send X-API-Key, Authorization: Bearer, ?key=, or the "
                  "session's viewer_token as ?token= or X-Viewer-Token)", "code": "unauthorized"})


def test_viewers_limit_tokens_and_busy_then_nothing_leaks(api, offers):
    server, client = api
    before = gauges(client)
    # A session over WebRTC, through ?key= as a browser sends it; it holds the one device place.
    r = httpx.post(f"{server.url}/inference/webrtc/face?key={KEY}", content=offers["feeder"], headers=SDP)
    assert r.status_code == 201 and r.headers["content-type"] == "application/sdp", r.text
    assert "a=candidate:" in r.text and "a=end-of-candidates" in r.text  # non-trickle: every candidate
    session = r.headers["location"]
    live = state(server).webrtc.find(session.rsplit("/", 1)[1])
    # The device is full: 429 busy with Retry-After, exactly as the socket's admission.
    busy = client.post("/inference/webrtc/face", content=offers["feeder"], headers=SDP)
    assert busy.status_code == 429 and busy.json()["code"] == "busy" and int(busy.headers["retry-after"]) >= 1
    # A viewer by the session's token (no key); the second is one too many.
    first = httpx.post(f"{server.url}{session}?token={live.token}", content=offers["viewer"], headers=SDP)
    assert first.status_code == 201, first.text
    assert first.headers["location"].startswith(f"{session}/viewers/")
    assert error(client.post(session, content=offers["viewer"], headers=SDP)) == (429, {
        "detail": f"session {live.id!r} has MUSETALK_WEBRTC_MAX_VIEWERS = 1 viewers already",
        "code": "too_many_viewers"})
    assert error(client.post(session, content=offers["feeder"].replace("a=recvonly", "a=inactive"),
                             headers=SDP))[1]["code"] == "invalid_sdp"
    during = gauges(client)
    assert during['musetalk_webrtc_peers{role="feeder"}'] == before.get('musetalk_webrtc_peers{role="feeder"}', 0) + 1
    assert during['musetalk_webrtc_peers{role="viewer"}'] == before.get('musetalk_webrtc_peers{role="viewer"}', 0) + 1
    # An expired token joins no one; the key still does.
    live.token_expires = 0.0
    assert httpx.post(f"{server.url}{session}?token={live.token}", content=offers["viewer"],
                      headers=SDP).status_code == 401
    # The viewer leaves by its own resource (the token, even expired, lets it), then the session ends.
    left = httpx.delete(f"{server.url}{first.headers['location']}", headers={"X-Viewer-Token": live.token})
    assert left.status_code == 200 and left.json()["message"] == "Viewer left"
    assert client.delete(first.headers["location"]).status_code == 404
    ended = client.delete(session)
    assert ended.json() == {"message": "Session ended", "session_id": live.id, "viewer_id": None}
    assert error(client.delete(session))[1]["code"] == "session_not_found"
    # Nothing left: no peer, no encoder, no session, no registry entry, and the device place is back.
    after = gauges(client)
    assert {k: v for k, v in after.items() if v} == {k: v for k, v in before.items() if v}
    assert state(server).webrtc.sessions == {} and not state(server).sessions
    again = client.post("/inference/webrtc/face", content=offers["feeder"], headers=SDP)
    assert again.status_code == 201
    assert client.delete(again.headers["location"]).status_code == 200


def test_deleting_a_socket_fed_session_closes_its_socket_normally(api):
    import json

    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    server, client = api
    with connect(server.url.replace("http", "ws") + "/inference/realtime/face",
                 additional_headers={"X-API-Key": KEY}, max_size=None) as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert client.delete(f"/inference/webrtc/sessions/{ready['session_id']}").status_code == 200
        with pytest.raises(ConnectionClosedOK):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 1000
    assert state(server).webrtc.sessions == {} and not state(server).sessions


def test_a_viewer_without_h264_gets_vp8_from_its_own_encoder(api, offers):
    """VP8 only for a peer that offers no H.264: the session then runs one encoder of each codec."""
    import asyncio

    from aiortc import RTCRtpReceiver

    from testkit.webrtc_peer import ClientPeer

    server, client = api
    r = client.post("/inference/webrtc/face", content=offers["feeder"], headers=SDP)  # its peer never connects
    assert r.status_code == 201
    session = r.headers["location"]

    async def run():
        peer = ClientPeer(feeder=False)
        video = next(t for t in peer.pc.getTransceivers() if t.kind == "video")
        video.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                   if c.mimeType == "video/VP8"])
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}) as ac:
            answer = await peer.connect(ac, session)
            assert answer.status_code == 201 and "VP8/90000" in answer.text and "H264" not in answer.text
            await peer.wait_for(lambda: len(peer.got.frames) >= 10, 20)
            during = gauges(client)
            await ac.delete(peer.location)
        await peer.close()
        return during

    during = asyncio.run(run())
    assert during['musetalk_webrtc_encoders{codec="VP8"}'] == 1
    assert client.delete(session).status_code == 200
    assert not {k: v for k, v in gauges(client).items() if v and "encoders" in k}
