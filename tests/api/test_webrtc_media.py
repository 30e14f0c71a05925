"""WebRTC media end to end, with the lite engine on real uvicorn and aiortc as the browser.

The avatar is a still (the first frame of lp_d11, 512²), so every idle frame is the same picture
and only the mouth moves while the avatar speaks: a decoded frame's difference from the idle
picture says whether the mouth is open. Speech is the first seconds of examples/media/speech.wav,
sent as a microphone does (20 ms chunks at 48 kHz, paced in real time, silence after).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from helpers import REPO, LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.media.audio import decode_audio
from servers import preprocess
from testkit.mediatools import write_still
from testkit.webrtc_peer import MIC_RATE, ClientPeer, SpeechTrack

FPS = 25
AVATAR = "still"
SPEECH_FROM_S, SPEECH_S = 3.0, 2.5  # speech.wav opens on 3 s of silence
MOUTH_OPEN = 6.0  # mean |frame - idle| in the mouth box, grey levels: an open mouth is far above it
STILL = 1.5  # ... and an idle frame's codec noise far below it


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webrtc")
    still = tmp / "still.png"
    write_still(media("lp_d11.mp4"), still)
    results = tmp / "results"
    with LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as server, \
            httpx.Client(base_url=server.url) as client:
        assert preprocess(client, AVATAR, still).status_code == 200
    return results


@pytest.fixture(scope="module")
def server(results):
    with LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """SPEECH_S of speech.wav's speech at 48 kHz (the microphone's rate)."""
    start = int(SPEECH_FROM_S * 16_000)
    x = decode_audio(REPO / "examples" / "media" / "speech.wav")[start:start + int(SPEECH_S * 16_000)]
    return np.interp(np.arange(int(len(x) * 3)) / 3, np.arange(len(x)), x).astype(np.float32)


def grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)


def mouth_box(speaking: list[np.ndarray], idle: np.ndarray) -> tuple[slice, slice]:
    """Where the speaking frames differ from the idle picture (by more than codec noise): the mouth."""
    moved = np.max([np.abs(grey(f) - idle) for f in speaking], axis=0) > 24
    ys, xs = np.nonzero(moved)
    assert len(ys), "no frame of the utterance differs from the idle picture"
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def mouth_motion(frames: dict[int, np.ndarray], started: int, ended: int) -> dict[int, float]:
    """Per frame index: mean absolute difference from the decoded idle picture inside the mouth box."""
    idle = np.median([grey(f) for i, f in frames.items() if i < started], axis=0)
    box = mouth_box([f for i, f in frames.items() if started <= i <= ended], idle)
    return {i: float(np.abs(grey(f)[box] - idle[box]).mean()) for i, f in frames.items()}


async def gauges(client: httpx.AsyncClient) -> dict[str, float]:
    out = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(("musetalk_webrtc_peers", "musetalk_webrtc_encoders", "musetalk_realtime_sessions")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return {k: v for k, v in out.items() if v}


def test_a_peer_speaks_and_sees_and_hears_the_avatar(server, speech):

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            before = await gauges(client)
            mic = SpeechTrack(speech, lead_s=1.0)
            peer = ClientPeer(mic=mic)
            r = await peer.connect(client, f"/inference/webrtc/{AVATAR}")
            assert r.status_code == 201, r.text
            ended = lambda: any(e["type"] == "speech_ended" for e in peer.got.events)  # noqa: E731
            await peer.wait_for(ended, 15)
            await asyncio.sleep(1.5)  # silence after the utterance: the gate closed it, the mouth shut
            during = await gauges(client)
            assert (await client.delete(peer.location)).status_code == 200
            await peer.close()
            await asyncio.sleep(0.3)
            return peer.got, before, during, await gauges(client)

    got, before, during, after = asyncio.run(run())
    ready = got.events[0]
    assert ready["type"] == "ready" and ready["sample_rate"] == MIC_RATE and ready["session_id"]
    started = next(e for e in got.events if e["type"] == "speech_started")
    stopped = next(e for e in got.events if e["type"] == "speech_ended")
    assert stopped["reason"] == "end"  # the voice gate's `end`, after 0.6 s of quiet
    # The video: decoded at the avatar's frame rate (RTP time and wall time agree).
    pts = np.array([p for p, _ in got.frames])
    index = np.round((pts - pts[0]) * FPS).astype(int)  # frame 0 is the first the peer got: the session's first
    assert np.all(np.diff(index) >= 1) and np.mean(np.diff(index) == 1) > 0.95
    wall = got.arrivals[-1] - got.arrivals[0]
    assert abs((len(got.arrivals) - 1) / wall - FPS) < 2.5, (len(got.arrivals), wall)
    # The mouth moves during the utterance's frames and is still in the silence after it.
    motion = mouth_motion(dict(zip(index, [f for _, f in got.frames], strict=True)), started["frame"], stopped["frame"])
    speaking = [motion[i] for i in range(started["frame"], stopped["frame"] + 1) if i in motion]
    after_end = [motion[i] for i in motion if i > stopped["frame"] + 3]
    before_start = [motion[i] for i in motion if i < started["frame"]]
    assert len(speaking) >= 0.9 * (stopped["frame"] - started["frame"])
    assert np.mean(np.array(speaking) > MOUTH_OPEN) > 0.5, np.round(speaking, 2)
    assert after_end and max(after_end) < STILL and np.ptp(after_end) < 0.3, np.round(after_end, 2)
    assert before_start and max(before_start) < STILL, np.round(before_start, 2)
    # The audio comes back: as much as the session played, loud while it spoke.
    audio = got.audio_samples()
    assert abs(len(audio) / MIC_RATE - len(got.frames) / FPS) < 0.5
    assert np.sqrt(np.mean(audio ** 2)) > 0.01
    # One encoder and one feeder while it ran; nothing after DELETE.
    assert during == {**before, 'musetalk_webrtc_peers{role="feeder"}': 1.0,
                      'musetalk_webrtc_encoders{codec="H264"}': 1.0, "musetalk_realtime_sessions": 1.0}
    assert after == before


async def drain(ws, seen: list) -> None:
    """Read the socket's frames as its client would (an unread socket would hold the session's clock back)."""
    async for message in ws:
        seen.append(message)


def frame_indices(frames: list[tuple[float, np.ndarray]]) -> list[int]:
    """Each received frame's index on the session's clock, counted from the first received (its RTP time)."""
    return [round((p - frames[0][0]) * FPS) for p, _ in frames]


def test_interrupt_over_the_data_channel_returns_to_idle_within_a_few_frames(server, speech):
    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            mic = SpeechTrack(speech, lead_s=0.5)
            peer = ClientPeer(mic=mic)
            assert (await peer.connect(client, f"/inference/webrtc/{AVATAR}")).status_code == 201
            await peer.wait_for(lambda: any(e["type"] == "speech_started" for e in peer.got.events), 15)
            await asyncio.sleep(1.0)
            mic.hush()  # the person stops; what is in flight still arrives
            await asyncio.sleep(0.3)
            peer.send({"type": "interrupt"})
            await peer.wait_for(lambda: any(e["type"] == "speech_ended" for e in peer.got.events), 5)
            await asyncio.sleep(1.2)
            await client.delete(peer.location)
            await peer.close()
            return peer.got

    got = asyncio.run(run())
    started = next(e for e in got.events if e["type"] == "speech_started")
    stopped = next(e for e in got.events if e["type"] == "speech_ended")
    assert stopped["reason"] == "interrupt" and stopped["utterance"] == started["utterance"]
    assert sum(e["type"] == "speech_started" for e in got.events) == 1  # the interrupted speech's tail made none
    frames = dict(zip(frame_indices(got.frames), [f for _, f in got.frames], strict=True))
    motion = mouth_motion(frames, started["frame"], stopped["frame"])
    assert max(motion[i] for i in range(started["frame"], stopped["frame"] + 1) if i in motion) > MOUTH_OPEN
    idle_again = [motion[i] for i in motion if i > stopped["frame"] + 3]  # "a few frames": 3 (120 ms)
    assert len(idle_again) > FPS // 2 and max(idle_again) < STILL, np.round(idle_again, 2)


def test_a_socket_fed_session_with_two_webrtc_viewers(server, speech):
    """A backend feeds the session over the WebSocket; two viewers see the same frames from one encoder."""
    pcm = (np.clip(speech[::3], -1, 1) * 32767).astype("<i2").tobytes()  # 16 kHz, the socket's default rate
    chunk = 640  # 20 ms

    async def feed(ws):
        t0 = time.monotonic()
        for k, at in enumerate(range(0, len(pcm), chunk)):
            await ws.send(pcm[at:at + chunk])
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))
        await ws.send(json.dumps({"type": "end"}))

    async def run():
        url = server.url.replace("http", "ws") + f"/inference/realtime/{AVATAR}"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client, connect(url, max_size=None) as ws:
            ready = json.loads(await ws.recv())
            session = f"/inference/webrtc/sessions/{ready['session_id']}"
            seen: list = []
            drainer = asyncio.create_task(drain(ws, seen))
            a, b = ClientPeer(feeder=False), ClientPeer(feeder=False)
            assert (await a.connect(client, session)).status_code == 201
            await a.wait_for(lambda: len(a.got.frames) >= 10, 10)
            feeder = asyncio.create_task(feed(ws))
            assert (await b.connect(client, session, params={"token": ready["viewer_token"]})).status_code == 201
            await b.wait_for(lambda: len(b.got.frames) >= 10, 10)
            two = await gauges(client)
            await feeder
            await asyncio.sleep(0.5)
            assert (await client.delete(a.location)).status_code == 200
            await a.close()
            left_at = len(b.got.frames)
            await asyncio.sleep(1.0)
            one = await gauges(client)
            b_after = len(b.got.frames) - left_at
            await ws.close()
            drainer.cancel()
            await asyncio.sleep(0.5)
            gone = await gauges(client)
            await b.close()
            return a.got, b.got, two, one, b_after, gone, seen

    a, b, two, one, b_after, gone, seen = asyncio.run(run())
    assert two['musetalk_webrtc_encoders{codec="H264"}'] == 1 and two['musetalk_webrtc_peers{role="viewer"}'] == 2
    assert one['musetalk_webrtc_encoders{codec="H264"}'] == 1 and one['musetalk_webrtc_peers{role="viewer"}'] == 1
    # B's first picture (a key frame forced for it) is one A decoded too; from there on the frames they
    # both got are the same pictures, frame for frame.
    sums_a = [hashlib.md5(f.tobytes()).hexdigest() for _, f in a.frames]
    sums_b = [hashlib.md5(f.tobytes()).hexdigest() for _, f in b.frames]
    first = sums_a.index(sums_b[0])
    index_a = {i - frame_indices(a.frames)[first]: s for i, s in zip(frame_indices(a.frames), sums_a, strict=True)}
    both = [(index_a[i], s) for i, s in zip(frame_indices(b.frames), sums_b, strict=True) if i in index_a]
    assert len(both) > 2 * FPS and all(x == y for x, y in both)
    assert len({s for _, s in both}) > 10  # the avatar spoke while they watched: many distinct pictures
    # A leaving did not disturb B: B's next second held a second's frames.
    assert b_after >= FPS - 3
    # The socket's own client got its frames throughout, and the session's end took every peer along.
    assert sum(isinstance(m, bytes) for m in seen) > 3 * FPS
    assert gone == {}


VANISHING_PEER = """
import asyncio, sys, httpx
from testkit.webrtc_peer import ClientPeer
async def main():
    peer = ClientPeer(feeder=False)
    async with httpx.AsyncClient(base_url=sys.argv[1]) as client:
        assert (await peer.connect(client, sys.argv[2])).status_code == 201
    await peer.wait_for(lambda: len(peer.got.frames) >= 5, 20)
    print("watching", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_a_viewer_that_vanishes_is_dropped_within_seconds(server):
    """A viewer's process is killed (no DTLS close, no DELETE, as a crashed tab or a lost network): ICE
    consent fails and the server frees its peer within MUSETALK_WEBRTC_CONSENT_TIMEOUT_S (6 s) and change."""
    url = server.url.replace("http", "ws") + f"/inference/realtime/{AVATAR}"

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client, connect(url) as ws:
            session = f"/inference/webrtc/sessions/{json.loads(await ws.recv())['session_id']}"
            drainer = asyncio.create_task(drain(ws, []))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", VANISHING_PEER, server.url, session, cwd=REPO, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'service'}"})
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"watching"
            watching = (await gauges(client)).get('musetalk_webrtc_peers{role="viewer"}')
            proc.kill()
            await proc.wait()
            killed = time.monotonic()
            while (await gauges(client)).get('musetalk_webrtc_peers{role="viewer"}'):
                assert time.monotonic() - killed < 12, "the vanished viewer was not dropped"
                await asyncio.sleep(0.2)
            dropped_s = time.monotonic() - killed
            encoders = (await gauges(client)).get('musetalk_webrtc_encoders{codec="H264"}')
            drainer.cancel()
            return watching, dropped_s, encoders

    watching, dropped_s, encoders = asyncio.run(run())
    assert watching == 1
    print(f"vanished viewer dropped after {dropped_s:.1f} s")
    assert 3 < dropped_s < 10, dropped_s  # consent checks each second, six misses: not at once, not 30 s
    assert encoders is None  # the encoder went with its last viewer, while the session goes on
