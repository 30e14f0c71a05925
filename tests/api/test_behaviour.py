"""How the service behaves over time: incremental streams, cancellation, liveness under load."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from fakes import FakeEngine
from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from servers import make_server, post_audio, preprocess
from testkit.mediatools import parse_mjpeg, write_still


def first_part_time(client: httpx.Client, avatar: str, audio, **params) -> tuple[float, httpx.Response]:
    """Seconds from sending the request to holding the first complete part."""
    with audio.open("rb") as f:
        started = time.monotonic()
        with client.stream("POST", f"/inference/stream/{avatar}", params=params,
                           files={"audio_file": (audio.name, f)}, timeout=60) as r:
            buf = b""
            for chunk in r.iter_bytes():
                buf += chunk
                if buf.count(b"--frame") >= 2:  # the first part is complete when the second begins
                    return time.monotonic() - started, r
    raise AssertionError("stream ended before a second part")


def test_stream_is_incremental_and_ttff_does_not_grow_with_audio(tmp_path):
    engine = FakeEngine(delay_s=0.02)  # 125 frames take >= 2.5 s
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        first_part_time(client, "a", media("vr_audio1.wav"))  # loads the avatar into memory
        short, _ = first_part_time(client, "a", media("vr_audio1.wav"))  # 5 s of audio
        assert engine.produced < 125, "the first part left only after the engine had finished"
        long, _ = first_part_time(client, "a", media("mt_eng.wav"))  # 60 s of audio
        assert engine.produced < 1500
    assert short < 1.0 and long < 1.0
    assert long < short + 0.5, f"time to first frame grew with the audio: {short:.3f} s -> {long:.3f} s"


def test_client_disconnect_stops_generation_within_a_second(tmp_path):
    engine = FakeEngine(delay_s=0.01)
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        with media("mt_eng.wav").open("rb") as f, client.stream(
            "POST", "/inference/stream/a", files={"audio_file": ("a.wav", f)}, timeout=60
        ) as r:
            next(r.iter_bytes())
        closed = time.monotonic()
        deadline = closed + 5
        while engine.finished_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.finished_at is not None, "the engine never stopped"
        assert engine.finished_at - closed < 1.0
        assert engine.produced < 1500  # 60 s at 25 fps would be 1500
        body = client.get("/health").json()
        assert body["active_streams"] == 0


def test_health_answers_during_a_long_preprocess_and_a_stream(tmp_path):
    engine = FakeEngine(prepare_delay_s=3.0, delay_s=0.01)
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url) as client:
        result = {}
        job = threading.Thread(target=lambda: result.update(r=preprocess(client, "slow", media("vr_face2.mp4"))))
        job.start()
        latencies = []
        while job.is_alive():
            t = time.monotonic()
            assert client.get("/health", timeout=2).status_code == 200
            latencies.append(time.monotonic() - t)
            time.sleep(0.1)
        job.join()
        assert result["r"].status_code == 200
        assert len(latencies) >= 10 and max(latencies) < 0.5
        # and during a stream
        with media("mt_eng.wav").open("rb") as f, client.stream(
            "POST", "/inference/stream/slow", files={"audio_file": ("a.wav", f)}, timeout=60
        ) as r:
            chunks = r.iter_bytes()  # held: dropping the iterator would close the connection
            next(chunks)
            t = time.monotonic()
            assert client.get("/health", timeout=2).json()["active_streams"] == 1
            assert time.monotonic() - t < 0.5


def test_failure_after_first_byte_ends_with_an_error_part(tmp_path):
    with make_server(tmp_path, FakeEngine(fail_at=3)) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        r = post_audio(client, "/inference/stream/a", media("vr_audio1.wav"))
        assert r.status_code == 200
        parts, closed = parse_mjpeg(r.content)
        assert closed and [p.headers["Content-Type"] for p in parts] == ["image/jpeg"] * 3 + ["application/json"]
        assert parts[-1].headers["X-Stream-Error"] == "true" and parts[-1].headers["X-Stream-Error-Status"] == "500"
        err = json.loads(parts[-1].body)
        assert err["code"] == "internal_error" and "after 3 of 125 frames" in err["detail"]
        assert "Traceback" not in r.text


def test_failure_before_first_byte_is_a_500_without_trace(tmp_path):
    with make_server(tmp_path, FakeEngine(fail_at=0)) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        for path in ("/inference/stream/a", "/inference/batch/a"):
            r = post_audio(client, path, media("vr_audio1.wav"))
            assert r.status_code == 500
            assert r.json() == {"detail": "rendering failed; the server log has the details", "code": "internal_error"}


def test_realtime_paces_frames_at_the_frame_rate(tmp_path):
    with make_server(tmp_path, FakeEngine()) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        audio = media("vr_audio1.wav")  # 5.016 s -> 125 frames -> >= 124/25 s when paced
        t = time.monotonic()
        post_audio(client, "/inference/stream/a", audio)  # also loads the avatar into memory
        free = time.monotonic() - t
        t = time.monotonic()
        r = post_audio(client, "/inference/stream/a", audio, params={"realtime": "true"})
        paced = time.monotonic() - t
    assert r.status_code == 200 and len(parse_mjpeg(r.content)[0]) == 125
    assert 124 / 25 - 0.1 <= paced < 124 / 25 + 2.0
    assert free < paced


def test_ready_is_503_until_the_engine_has_loaded(tmp_path, monkeypatch):
    gate = threading.Event()

    def slow_create_engine(name, **kw):
        gate.wait(10)
        return FakeEngine()

    monkeypatch.setattr("musetalk_server.runtime.create_engine", slow_create_engine)
    app = create_app(Settings(_env_file=None, result_dir=tmp_path / "results", engine="lite"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        r = client.get("/health/ready")
        assert (r.status_code, r.json()["code"]) == (503, "not_ready")
        assert client.get("/health").json()["models"]["loaded"] is False
        assert client.get("/health/live").status_code == 200
        r = post_audio(client, "/inference/stream/x", media("vr_audio1.wav"))
        assert (r.status_code, r.json()["code"]) == (503, "not_ready")
        gate.set()
        deadline = time.monotonic() + 5
        while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("clip", "frames", "size"),
    [("vr_face1.mp4", 152, [700, 700]),  # 22.13 fps source
     ("lp_s18.mp4", 235, [1280, 720]),  # 30 fps, landscape, small face
     ("mt_yongen.mp4", 268, [704, 1216])],  # stylised portrait
)
def test_odd_timelines_and_faces(served, clip, frames, size):
    _, _, client = served
    r = preprocess(client, clip.split(".")[0], media(clip))
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info["frames"] == frames and info["size"] == size and info["fps"] == 25.0
    assert info["face"]["missing_frames"] <= 0.05 * frames


def test_still_image_makes_a_one_frame_avatar(served, tmp_path):


    _, _, client = served
    still = tmp_path / "face.jpg"
    write_still(media("vr_face2.mp4"), still)
    r = preprocess(client, "still", still)
    assert r.status_code == 200 and r.json()["info"]["frames"] == 1
    r = post_audio(client, "/inference/stream/still", media("vr_audio1.wav"))
    assert r.status_code == 200 and len(parse_mjpeg(r.content)[0]) == 125
