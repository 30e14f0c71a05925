"""WebRTC through a real TURN relay: coturn on loopback, the client restricted to relayed candidates.

The server gets the relay from its settings (MUSETALK_WEBRTC_ICE_SERVERS and the TURN username and
credential, as a Kubernetes Secret would give them); the client, like a browser with
`iceTransportPolicy: "relay"`, may send only through the relay, so any media it gets came
through coturn. This is the set-up docs/webrtc.md recommends for clusters, on one machine.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
from aiortc import RTCIceServer

from fakes import FakeEngine
from helpers import media
from servers import make_server, preprocess
from testkit.mediatools import first_frames, write_still
from testkit.webrtc_peer import ClientPeer, SpeechTrack

USER, PASSWORD, REALM = "musetalk", "relay-secret", "musetalk.test"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    if shutil.which("turnserver") is None:
        pytest.skip("coturn (turnserver) is not installed; .ci/debian_packages.sh installs it")
    port = _free_udp_port()
    log = tmp_path_factory.mktemp("coturn") / "turn.log"
    proc = subprocess.Popen(
        ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         "--min-port=49200", "--max-port=49400", "--lt-cred-mech", f"--user={USER}:{PASSWORD}", f"--realm={REALM}",
         "--allow-loopback-peers", "--verbose", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay", "--simple-log",
         f"--log-file={log}", f"--pidfile={log.parent / 'turn.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and "listener" in log.read_text(errors="replace").lower()):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"coturn did not start: {log.read_text(errors='replace') if log.exists() else ''}")
            time.sleep(0.05)
        yield f"turn:127.0.0.1:{port}?transport=udp", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_media_flow_through_the_relay_alone(tmp_path, coturn):
    url, log = coturn
    still = tmp_path / "face.png"
    write_still(media("vr_face2.mp4"), still)
    with make_server(tmp_path, FakeEngine(live=True), webrtc_ice_servers=url, webrtc_turn_username=USER,
                     webrtc_turn_credential=PASSWORD) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "face", still).status_code == 200

        async def run():
            peer = ClientPeer(mic=SpeechTrack(np.zeros(0, np.float32)), relay_only=True,
                              ice_servers=[RTCIceServer(url, username=USER, credential=PASSWORD)])
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as ac:
                r = await peer.connect(ac, "/inference/webrtc/face")
                assert r.status_code == 201, r.text
                offered = [line for line in peer.pc.localDescription.sdp.split("\r\n")
                           if line.startswith("a=candidate:")]
                await peer.wait_for(lambda: len(peer.got.frames) >= 25 and peer.got.events, 20)
                await ac.delete(peer.location)
            await peer.close()
            return offered, peer.got

        offered, got = asyncio.run(run())
    assert offered and all(" typ relay " in c for c in offered)  # the client could send nowhere else
    assert got.events[0]["type"] == "ready" and len(got.frames) >= 25
    assert got.frames[-1][1].shape[:2] == first_frames(media("vr_face2.mp4"), 1)[0].shape[:2]
    # coturn's own count of what it relayed from the server's side to the client's allocation (it logs
    # the count when the allocation closes, a moment after the client left)
    deadline = time.monotonic() + 5
    while max(relayed_bytes(log), default=0) <= 10_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert max(relayed_bytes(log), default=0) > 10_000, relayed_bytes(log)


def relayed_bytes(log) -> list[int]:
    return [int(m) for m in re.findall(r"peer usage: .*?rb=(\d+)", log.read_text(errors="replace"))]
