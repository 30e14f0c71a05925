"""WS /inference/realtime/{avatar_id} with the lite engine, on real uvicorn, through a real WebSocket client.

The avatar is the first 2 s of lp_d11 (512²); the speech is vr_audio1.wav. Frames come at 25 fps
of wall time, so each test lasts as long as the audio it plays (a few seconds).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.media.audio import decode_audio
from servers import make_server, preprocess, wait_ready
from testkit.mediatools import first_frames, write_video

FPS = 25
AVATAR = "d11"
FRAME_SAMPLES = 16_000 // FPS  # 640 at 16 kHz
CHUNK_20MS = 320 * 2  # bytes of 20 ms PCM16 at 16 kHz
RECV_S = 5.0


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return decode_audio(media("vr_audio1.wav"))  # 16 kHz float32, 5 s


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """An avatar store with `d11` (50 frames of lp_d11), made by the lite engine."""
    tmp = tmp_path_factory.mktemp("rt")
    clip = write_video(first_frames(media("lp_d11.mp4"), 50), tmp / "d11.mp4", "libx264", FPS)
    results = tmp / "results"
    app = create_app(Settings(_env_file=None, result_dir=results, engine="lite"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, AVATAR, clip).status_code == 200
    return results


@pytest.fixture(scope="module")
def server(results):
    with LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as srv:
        yield wait_ready(srv)


@pytest.fixture
def fresh(results):
    """A server of its own, whose device has no history: it admits a second session by the rule for
    a device that has measured nothing (the seeded cost against at least one core's worth), not by
    the costs and the late frames that the module's earlier sessions left in `server`'s scheduler.
    On a busy machine those refuse the second session with 4429, as the product should."""
    with LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as srv:
        yield wait_ready(srv)


@pytest.fixture(scope="module")
def strict(results):
    """A server with a key, short timeouts, a small buffer and room for one session (the device
    scheduler's cap, MUSETALK_MAX_REALTIME_STREAMS)."""
    app = create_app(Settings(_env_file=None, result_dir=results, engine="lite", api_key="sesame",
                              realtime_idle_timeout_s=0.6, realtime_max_buffer_s=2.0, max_realtime_streams=1))
    with LiveServer(app) as srv:
        yield srv


def ws_url(srv: LiveServer, avatar: str = AVATAR, query: str = "") -> str:
    return srv.url.replace("http", "ws") + f"/inference/realtime/{avatar}" + query


class Recorder:
    """Everything one session sent, in order: ("frame", header tuple, jpeg, audio) or ("event", dict)."""

    def __init__(self, ws) -> None:
        self.ws, self.items = ws, []
        self.ready = json.loads(ws.recv(timeout=RECV_S))

    def pump(self, until, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not until(self):
            assert time.monotonic() < deadline, "timed out waiting for the session"
            m = self.ws.recv(timeout=RECV_S)
            if isinstance(m, str):
                self.items.append(("event", json.loads(m)))
            else:
                head = struct.unpack_from("<4sIIIHHI", m)
                n = head[6]
                self.items.append(("frame", head, m[24:24 + n], m[24 + n:]))

    def frames(self):
        return [i for i in self.items if i[0] == "frame"]

    def events(self, kind: str | None = None):
        return [i[1] for i in self.items if i[0] == "event" and (kind is None or i[1]["type"] == kind)]

    def ended(self, n: int):
        return lambda r: any(e["utterance"] == n for e in r.events("speech_ended"))

    def after_frames(self, n: int):
        count = len(self.frames()) + n
        return lambda r: len(r.frames()) >= count


def utterance_audio(rec: Recorder, n: int) -> bytes:
    """The audio of utterance n's speaking frames that carried audio (not underrun)."""
    return b"".join(f[3] for f in rec.frames() if f[1][3] == n and f[1][4] & 1 and not f[1][4] & 4)


def padded(pcm: bytes, frame_bytes: int) -> bytes:
    return pcm + bytes(-len(pcm) % frame_bytes)


def feed_realtime(ws, pcm: bytes, chunk: int = CHUNK_20MS, then_end: bool = True) -> threading.Thread:
    """Send `pcm` in chunks paced at real time on a thread, then `end`."""
    def run() -> None:
        t0 = time.monotonic()
        per = chunk / 2 / 16_000
        for k, start in enumerate(range(0, len(pcm), chunk)):
            ws.send(pcm[start:start + chunk])
            time.sleep(max(0.0, t0 + (k + 1) * per - time.monotonic()))
        if then_end:
            ws.send(json.dumps({"type": "end"}))
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_ready_then_idle_frames_in_the_exact_layout(server):
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        # session_id and viewer_token: how WebRTC viewers join this session (docs/webrtc.md)
        assert isinstance(rec.ready.pop("session_id"), str) and isinstance(rec.ready.pop("viewer_token"), str)
        assert rec.ready == {"type": "ready", "fps": 25.0, "width": 512, "height": 512, "sample_rate": 16000,
                             "header_bytes": 24}
        rec.pump(rec.after_frames(5))
        for i, (_, head, jpeg, audio) in enumerate(rec.frames()):
            magic, index, pts, utt, flags, reserved, n = head
            assert (magic, index, pts, utt, flags, reserved) == (b"MTF1", i, i * 1000 // FPS, 0, 0, 0)
            assert n == len(jpeg) and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (512, 512, 3)
            assert audio == bytes(2 * FRAME_SAMPLES)
        ws.send(json.dumps({"type": "ping"}))
        rec.pump(lambda r: r.events("pong"))
        assert rec.events("pong") == [{"type": "pong"}]


def test_real_time_20ms_chunks_conserve_the_audio_and_idle_around_it(server, speech):
    pcm = pcm16(speech[:int(1.5 * 16_000) + 123])  # not a whole number of frames: the last one is padded
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        rec.pump(rec.after_frames(3))  # idle before
        feed_realtime(ws, pcm)
        rec.pump(rec.ended(1))
        rec.pump(rec.after_frames(3))  # idle after
    frames = rec.frames()
    started, ended = rec.events("speech_started"), rec.events("speech_ended")
    assert started[0]["utterance"] == 1 and ended == [{"type": "speech_ended", "utterance": 1,
                                                     "frame": ended[0]["frame"], "reason": "end"}]
    first, last = started[0]["frame"], ended[0]["frame"]
    assert utterance_audio(rec, 1) == padded(pcm, 2 * FRAME_SAMPLES)
    speaking = [f for f in frames if f[1][3] == 1]
    assert [f[1][1] for f in speaking] == list(range(first, last + 1))
    assert all(f[1][4] & 1 for f in speaking) and speaking[-1][1][4] & 2 and not any(f[1][4] & 2 for f in speaking[:-1])
    # (Whether a loaded machine's feeder thread kept up is the quality test's business, on a
    # simulated clock; frames that underran carry no audio, so conservation holds either way.)
    assert all(f[1][3:5] == (0, 0) and f[3] == bytes(1280) for f in frames if not first <= f[1][1] <= last)
    assert [f[1][1] for f in frames] == list(range(len(frames))), "one frame per tick, none skipped"


def frame_bytes(rate: int) -> int:
    """Bytes of PCM16 in each frame at `rate` (a whole number of samples per frame at 25 fps)."""
    assert rate % FPS == 0
    return 2 * rate // FPS


def test_a_10s_burst_at_48khz_plays_whole_and_conserves(server, speech):
    """The old way still works: a `config` right after the socket opens, no query parameter. The
    frames sent before it was read stay at 16 kHz, and `config_applied` says which ones."""
    burst = decode_audio(media("mt_eng.wav"), rate=48_000)[:10 * 48_000]
    pcm = pcm16(burst)
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        assert rec.ready["sample_rate"] == 16000
        ws.send(json.dumps({"type": "config", "sample_rate": 48000}))
        ws.send(pcm)  # all of it at once, as TTS does
        ws.send(json.dumps({"type": "end"}))
        rec.pump(rec.ended(1), timeout=30)
    speaking = [f for f in rec.frames() if f[1][3] == 1]
    assert len(speaking) == 250 and not any(f[1][4] & 4 for f in speaking)
    [applied] = rec.events("config_applied")
    k = applied["frame"]
    assert applied == {"type": "config_applied", "sample_rate": 48000, "frame": k}
    sizes = [len(f[3]) for f in rec.frames()]
    assert sizes == [frame_bytes(16000)] * k + [frame_bytes(48000)] * (len(sizes) - k) and k <= speaking[0][1][1]
    assert utterance_audio(rec, 1) == pcm


def test_the_query_rate_holds_from_frame_0_and_ready_echoes_it(server):
    pcm = pcm16(decode_audio(media("vr_audio1.wav"), rate=48_000)[:48_000 + 7])
    for run in range(4):  # a `config` at open left frame 0 at 16 kHz in 2 of 3 runs; the query has no race
        with connect(ws_url(server, query="?sample_rate=48000"), max_size=None) as ws:
            rec = Recorder(ws)
            assert rec.ready["sample_rate"] == 48000
            if run == 0:  # one run also speaks: its audio comes back whole at 48 kHz
                ws.send(pcm)
                ws.send(json.dumps({"type": "end"}))
                rec.pump(rec.ended(1))
                assert utterance_audio(rec, 1) == padded(pcm, frame_bytes(48000))
            rec.pump(rec.after_frames(2))
        assert rec.frames()[0][1][1] == 0 and not rec.events("config_applied")
        assert {len(f[3]) for f in rec.frames()} == {frame_bytes(48000)}, f"run {run}"


def test_a_config_mid_session_names_the_first_frame_at_its_rate(server, speech):
    pcm = pcm16(decode_audio(media("vr_audio1.wav"), rate=22_050)[:11_025])
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        rec.pump(rec.after_frames(5))
        sent_before = len(rec.frames())
        ws.send(json.dumps({"type": "config", "sample_rate": 22050}))
        rec.pump(lambda r: r.events("config_applied"))
        rec.pump(rec.after_frames(3))
        ws.send(pcm)
        ws.send(json.dumps({"type": "end"}))
        rec.pump(rec.ended(1))
    [applied] = rec.events("config_applied")
    i = applied["frame"]
    assert applied == {"type": "config_applied", "sample_rate": 22050, "frame": i} and i >= sent_before
    frames = rec.frames()
    assert [f[1][1] for f in frames] == list(range(len(frames)))
    assert all(len(f[3]) == frame_bytes(16000) for f in frames[:i])
    assert all(len(f[3]) == frame_bytes(22050) for f in frames[i:])  # 882 samples a frame
    assert utterance_audio(rec, 1) == padded(pcm, frame_bytes(22050))


def test_an_underrun_gap_flags_frames_and_resumes(server, speech):
    a, b = pcm16(speech[:8000]), pcm16(speech[8000:16000])  # 0.5 s, a 0.5 s gap, 0.5 s
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        th = feed_realtime(ws, a, then_end=False)
        th.join()
        time.sleep(0.5)
        feed_realtime(ws, b)
        rec.pump(rec.ended(1))
    utt = [f for f in rec.frames() if f[1][3] == 1]
    under = [f for f in utt if f[1][4] & 4]
    assert len(under) >= 5 and all(f[1][4] & 1 and f[3] == bytes(1280) for f in under)
    kinds = "".join("u" if f[1][4] & 4 else "s" for f in utt)
    # Speech, the gap's underruns, speech again. Frames after the last of `b` wait on `end` (the
    # shapes look a few frames ahead), so on a busy machine a late `end` may add underruns at the
    # very end: those are underruns too, and not the gap's.
    assert kinds[0] == "s" and re.search(r"s+u{5,}s+", kinds), kinds
    assert utterance_audio(rec, 1) == a + b


def test_interrupt_mid_utterance_then_a_second_utterance(server, speech):
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        ws.send(pcm16(speech[:3 * 16_000]))  # 3 s, buffered at once
        rec.pump(lambda r: len([f for f in r.frames() if f[1][3] == 1]) >= 10)
        ws.send(json.dumps({"type": "interrupt"}))
        rec.pump(rec.ended(1))
        rec.pump(rec.after_frames(4))
        ws.send(pcm16(speech[:16_000]))
        ws.send(json.dumps({"type": "end"}))
        rec.pump(rec.ended(2))
        rec.pump(rec.after_frames(2))
    ended = rec.events("speech_ended")
    assert ended[0]["reason"] == "interrupt" and ended[1]["reason"] == "end" and ended[1]["utterance"] == 2
    one = [f for f in rec.frames() if f[1][3] == 1]
    assert one[-1][1][1] == ended[0]["frame"] and len(one) < 40, "the interrupt stopped utterance 1"
    after = [f for f in rec.frames() if ended[0]["frame"] < f[1][1] < rec.events("speech_started")[1]["frame"]]
    assert after and all(f[1][3:5] == (0, 0) for f in after), "idle between the utterances"
    assert utterance_audio(rec, 2) == pcm16(speech[:16_000])


def test_two_sessions_at_once_on_one_avatar(fresh, speech):
    pcm = pcm16(speech[:16_000])
    with connect(ws_url(fresh), max_size=None) as one, connect(ws_url(fresh), max_size=None) as two:
        r1, r2 = Recorder(one), Recorder(two)
        one.send(pcm)
        one.send(json.dumps({"type": "end"}))
        r1.pump(r1.ended(1))
        r2.pump(r2.after_frames(20))
    assert utterance_audio(r1, 1) == pcm
    assert all(f[1][3:5] == (0, 0) for f in r2.frames()), "the other session stayed idle"


def test_disconnect_mid_utterance_frees_the_engine(server, speech):
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        ws.send(pcm16(speech[:4 * 16_000]))
        rec.pump(lambda r: len([f for f in r.frames() if f[1][3] == 1]) >= 5)
        ws.close()  # mid-utterance: 3.8 s of it still buffered
        gone = time.monotonic()

    def rendering() -> bool:
        return any(t.name.startswith(f"realtime-{AVATAR}") for t in threading.enumerate())

    while time.monotonic() - gone < 1.0 and rendering():
        time.sleep(0.02)
    assert not rendering(), "the session's render thread outlived the client by a second"
    metrics = httpx.get(server.url + "/metrics").text
    assert "musetalk_realtime_sessions 0.0" in metrics
    assert 'musetalk_realtime_frames_total{kind="speech"}' in metrics


def close_of(url: str, send=None, headers=None) -> tuple[dict, int]:
    """(the error event, the close code) of a session the server refuses or ends."""
    with connect(url, max_size=None, additional_headers=headers) as ws:
        first = json.loads(ws.recv(timeout=RECV_S))
        if first["type"] == "ready" and send is not None:
            for message in send:
                ws.send(message)
        event = first
        try:
            while True:
                m = ws.recv(timeout=RECV_S)
                if isinstance(m, str) and json.loads(m)["type"] == "error":
                    event = json.loads(m)
        except ConnectionClosed:
            pass
        return event, ws.close_code


@pytest.mark.parametrize(("messages", "fragment"), [
    ([b"\x00\x01\x02"], "even number of bytes"),
    (['{"type": "dance"}'], "unknown message type"),
    (["{not json"], "JSON"),
    (['{"type": "config", "sample_rate": 96000}'], "sample_rate"),
    ([b"\x00\x00" * 320, '{"type": "config", "sample_rate": 8000}'], "before the first audio"),
    (['{"type": "config", "samplerate": 48000}'], "unknown key 'samplerate' in the 'config' message"),
    (['{"type": "ping", "id": 3}'], "unknown key 'id' in the 'ping' message"),
])
def test_bad_messages_close_4400(server, messages, fragment):
    event, code = close_of(ws_url(server), send=messages)
    assert (code, event["type"], event["code"]) == (4400, "error", "invalid_input") and fragment in event["detail"]


def test_a_misspelt_key_is_refused_with_its_name_not_ignored(server):
    with connect(ws_url(server), max_size=None) as ws:
        rec = Recorder(ws)
        ws.send(json.dumps({"type": "config", "samplerate": 48000}))
        with pytest.raises(ConnectionClosed):
            rec.pump(lambda r: False)
    [error] = rec.events("error")
    assert error == {"type": "error", "code": "invalid_input",
                     "detail": "unknown key 'samplerate' in the 'config' message; it takes type, sample_rate"}
    assert (ws.close_code, ws.close_reason) == (4400, "invalid_input")
    assert not rec.events("config_applied")


@pytest.mark.parametrize("value", ["96000", "7999", "48k", "+48000", "48_000", ""])
def test_a_bad_query_rate_closes_4400_before_ready(server, value):
    event, code = close_of(ws_url(server, query=f"?sample_rate={quote(value)}"))
    assert (code, event["type"], event["code"]) == (4400, "error", "invalid_input")
    shown = int(value) if value.isdigit() else repr(value)
    assert event["detail"] == f"the sample_rate query parameter must be an integer from 8000 to 48000, got {shown}"


def test_unknown_avatar_closes_4404(server):
    event, code = close_of(ws_url(server, "nobody"))
    assert (code, event["code"]) == (4404, "avatar_not_found")


def test_api_key_header_or_query_else_4401(strict):
    event, code = close_of(ws_url(strict))
    assert (code, event["type"], event["code"]) == (4401, "error", "unauthorized")
    assert close_of(ws_url(strict, query="?key=wrong"))[1] == 4401
    for kw in ({"headers": {"X-API-Key": "sesame"}}, {}):
        url = ws_url(strict, query="" if kw else "?key=sesame")
        with connect(url, max_size=None, additional_headers=kw.get("headers")) as ws:
            assert json.loads(ws.recv(timeout=RECV_S))["type"] == "ready"


def test_no_capacity_closes_4429(strict):
    with connect(ws_url(strict, query="?key=sesame"), max_size=None) as ws:
        assert json.loads(ws.recv(timeout=RECV_S))["type"] == "ready"
        event, code = close_of(ws_url(strict, query="?key=sesame"))
        assert (code, event["code"]) == (4429, "busy")


def test_idle_timeout_closes_4408(strict):
    t0 = time.monotonic()
    event, code = close_of(ws_url(strict, query="?key=sesame"))
    assert (code, event["code"]) == (4408, "timeout") and "IDLE_TIMEOUT" in event["detail"]
    assert 0.5 < time.monotonic() - t0 < 3.0


def test_a_burst_past_the_buffer_is_an_error_event_not_memory(strict, speech):
    with connect(ws_url(strict, query="?key=sesame"), max_size=None) as ws:
        rec = Recorder(ws)
        ws.send(pcm16(speech[:16_000]))  # 1 s fits in the 2 s buffer
        ws.send(pcm16(speech[16_000:3 * 16_000]))  # 2 s more would not: dropped
        ws.send(json.dumps({"type": "end"}))
        rec.pump(rec.ended(1))
    errors = rec.events("error")
    assert errors and errors[0]["code"] == "too_large" and "MAX_BUFFER" in errors[0]["detail"]
    assert utterance_audio(rec, 1) == pcm16(speech[:16_000])


def test_an_engine_without_incremental_rendering_closes_1011(tmp_path, results):
    import shutil

    from fakes import FakeEngine

    with make_server(tmp_path, FakeEngine()) as srv, httpx.Client(base_url=srv.url) as client:
        clip = write_video(first_frames(media("lp_d11.mp4"), 5), tmp_path / "c.mp4", "libx264", FPS)
        assert preprocess(client, "fake", clip).status_code == 200
        event, code = close_of(ws_url(srv, "fake"))
    assert (code, event["code"]) == (1011, "internal_error") and "server log" in event["detail"]
    shutil.rmtree(tmp_path / "results", ignore_errors=True)
