"""Every consumer passes through the one render entry, and its device ticket is taken and
released exactly once: a stream, a batch, an async job and a real-time session, each run to
its end, left by its client, and failed mid-render. Real HTTP and WebSockets on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fakes import FakeEngine
from helpers import media
from musetalk_server.device.scheduler import DeviceScheduler, Ticket
from musetalk_server.engines.base import FrameSession, LoadedAvatar, Renderer
from servers import make_server, post_audio, preprocess

SETTLE_S = 5.0  # how long a render may take to end after its client or its engine stopped


class _Fake(FakeEngine):
    """The fake engine, with a live session that can fail at a chosen speech frame."""

    def __init__(self) -> None:
        super().__init__()
        self.live_fail_at: int | None = None

    def open(self, avatar: LoadedAvatar) -> Renderer:
        return _LiveRenderer(self, super().open(avatar), avatar)


class _LiveRenderer(Renderer):
    def __init__(self, engine: _Fake, inner: Renderer, avatar: LoadedAvatar) -> None:
        self.engine, self.inner, self.avatar = engine, inner, avatar

    def render(self, audio: np.ndarray, fps: float, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        return self.inner.render(audio, fps, cancel)

    def session(self, fps: float) -> FrameSession:
        return _LiveFrames(self.engine, self.avatar)


class _LiveFrames(FrameSession):
    def __init__(self, engine: _Fake, avatar: LoadedAvatar) -> None:
        self.engine, self.avatar = engine, avatar

    @property
    def lookahead_s(self) -> float:
        return 0.0

    def speech_frame(self, utterance: int, i: int, background: int, audio: np.ndarray, final: bool) -> np.ndarray:
        if self.engine.live_fail_at is not None and i >= self.engine.live_fail_at:
            raise RuntimeError("fake live failure")
        return self.idle_frame(background)

    def idle_frame(self, background: int) -> np.ndarray:
        return self.avatar.frames[background]


class Tickets:
    """Counts, per ticket the device scheduler admits, how often it is released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admitted: list[Ticket] = []
        self.releases: Counter[int] = Counter()
        admit, release = DeviceScheduler.admit, Ticket.release

        def counting_admit(sched: DeviceScheduler, kind: str, **facts: object) -> Ticket:
            ticket = admit(sched, kind, **facts)  # type: ignore[arg-type]
            if kind != "preprocess":
                self.admitted.append(ticket)
            return ticket

        def counting_release(ticket: Ticket) -> None:
            self.releases[id(ticket)] += 1
            release(ticket)

        monkeypatch.setattr(DeviceScheduler, "admit", counting_admit)
        monkeypatch.setattr(Ticket, "release", counting_release)

    def settled(self, n: int, kind: str) -> list[int]:
        """Wait for `n` tickets of `kind` to be admitted and released; their release counts."""
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            mine = [t for t in self.admitted if t.kind == kind]
            if len(mine) >= n and all(self.releases[id(t)] for t in mine):
                break
            time.sleep(0.02)
        time.sleep(0.2)  # a second release, were there one, would come now
        mine = [t for t in self.admitted if t.kind == kind]
        assert len(mine) == n, f"{len(mine)} {kind} tickets admitted, expected {n}"
        return [self.releases[id(t)] for t in mine]


@pytest.fixture
def served(tmp_path, monkeypatch):
    engine = _Fake()
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        tickets = Tickets(monkeypatch)
        yield server, engine, client, tickets
        assert client.get("/health").json()["active_streams"] == 0


def test_a_stream_to_its_end_left_by_its_client_and_failed_mid_render(served):
    _, engine, client, tickets = served
    r = post_audio(client, "/inference/stream/a", media("vr_audio1.wav"))
    assert r.status_code == 200 and r.content.endswith(b"--frame--\r\n")
    engine.delay_s = 0.01
    with media("mt_eng.wav").open("rb") as f, client.stream(
            "POST", "/inference/stream/a", files={"audio_file": ("a.wav", f)}) as r:
        next(r.iter_bytes())  # then the client leaves, 60 s of audio unplayed
    engine.delay_s, engine.fail_at = 0.0, 5
    r = post_audio(client, "/inference/stream/a", media("vr_audio1.wav"))
    assert r.status_code == 200 and b"X-Stream-Error: true" in r.content
    assert tickets.settled(3, "unpaced") == [1, 1, 1]


def test_a_paced_stream_takes_and_gives_back_one_ticket_even_when_its_audio_is_refused(served, tmp_path):
    _, _, client, tickets = served
    r = post_audio(client, "/inference/stream/a", media("vr_audio1.wav"), params={"realtime": "true"})
    assert r.status_code == 200 and r.content.endswith(b"--frame--\r\n")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 64)
    r = post_audio(client, "/inference/stream/a", junk, params={"realtime": "true"})  # admitted, then refused
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media"
    assert tickets.settled(2, "paced") == [1, 1]


def test_a_batch_to_its_end_left_by_its_client_and_failed_mid_render(served):
    _, engine, client, tickets = served
    r = post_audio(client, "/inference/batch/a", media("vr_audio1.wav"))
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    engine.delay_s = 0.01
    with media("mt_eng.wav").open("rb") as f, pytest.raises(httpx.ReadTimeout):  # it gives up while the MP4 renders
        client.post("/inference/batch/a", files={"audio_file": ("a.wav", f)}, timeout=1.0)
    engine.delay_s, engine.fail_at = 0.0, 5
    r = post_audio(client, "/inference/batch/a", media("vr_audio1.wav"))
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert tickets.settled(3, "unpaced") == [1, 1, 1]


def _job(client: httpx.Client, audio: str) -> str:
    r = post_audio(client, "/inference/batch/a", media(audio), params={"async": "true"})
    assert r.status_code == 202
    return r.json()["job_id"]


def _until(client: httpx.Client, job_id: str, *states: str) -> dict:
    deadline = time.monotonic() + 30
    while (body := client.get(f"/jobs/{job_id}").json())["state"] not in states:
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def test_an_async_job_done_cancelled_and_failed_mid_render(served):
    _, engine, client, tickets = served
    assert _until(client, _job(client, "vr_audio1.wav"), "done")["state"] == "done"
    engine.delay_s = 0.01
    job = _job(client, "mt_eng.wav")
    _until(client, job, "running")
    assert client.delete(f"/jobs/{job}").status_code == 200
    _until(client, job, "cancelled")  # at once, or once the worker saw the cancel on a busy machine
    engine.delay_s, engine.fail_at = 0.0, 5
    assert _until(client, _job(client, "vr_audio1.wav"), "failed")["error"]["code"] == "internal_error"
    assert tickets.settled(3, "unpaced") == [1, 1, 1]


def _session(server, engine: _Fake, *, speak: bool) -> list[object]:
    """Open a session, speak 0.4 s if asked, then leave; what the server sent before it closed."""
    got: list[object] = []
    with connect(server.url.replace("http", "ws") + "/inference/realtime/a", max_size=None) as ws:
        got.append(json.loads(ws.recv(timeout=10)))
        if speak:
            ws.send(bytes(2 * 6400))
            ws.send(json.dumps({"type": "end"}))
        try:
            for _ in range(25):
                got.append(ws.recv(timeout=10))
        except ConnectionClosed:
            got.append(ws.close_code)
    return got


def test_a_realtime_session_left_by_its_client_and_failed_mid_render(served):
    server, engine, _, tickets = served
    assert _session(server, engine, speak=True)[0]["type"] == "ready"  # 25 frames, then it leaves
    engine.live_fail_at = 2
    got = _session(server, engine, speak=True)
    assert got[-1] == 1011 and any(isinstance(m, str) and json.loads(m)["type"] == "error" for m in got)
    assert tickets.settled(2, "realtime") == [1, 1]
