"""The device scheduler seen from a client: refusal at once, queue timeout, priority, shutdown.

A deliberately slow fake engine stands in for a full device: each frame step sleeps under the
scheduler's gate, so the device's time is the engine's delay, whatever else the machine does.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import numpy as np
import soundfile as sf

from fakes import FakeEngine
from helpers import media
from servers import make_server, post_audio, preprocess
from testkit.mediatools import parse_mjpeg

FPS = 25.0


def speech(tmp_path, seconds: float):
    """A cut of real speech, `seconds` long."""
    audio, rate = sf.read(media("mt_eng.wav"), dtype="float32")
    out = tmp_path / f"speech-{seconds:g}.wav"
    sf.write(out, audio[: int(seconds * rate)], rate)
    return out


def open_stream(client: httpx.Client, audio, **params):
    f = audio.open("rb")
    return client.stream("POST", "/inference/stream/a", params=params, files={"audio_file": ("a.wav", f)},
                         timeout=120)


def test_a_full_device_refuses_the_next_paced_stream_at_once(tmp_path):
    # 0.1 s a frame at 25 fps: one paced stream needs 2.5 device-seconds per second.
    engine = FakeEngine(delay_s=0.1)
    with make_server(tmp_path, engine, device_workers=2) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        short = speech(tmp_path, 1.0)
        with open_stream(client, speech(tmp_path, 10.0), realtime="true") as first:
            assert first.status_code == 200
            chunks = first.iter_bytes()  # held: a dropped iterator closes the connection
            next(chunks)  # its first frame is measured by now
            started = time.monotonic()
            refused = post_audio(client, "/inference/stream/a?realtime=true", short)
            took = time.monotonic() - started
        assert refused.status_code == 429
        assert refused.json()["code"] == "busy"
        assert int(refused.headers["Retry-After"]) >= 1
        assert took < 1.0, f"the refusal took {took:.3f} s"
        metrics = client.get("/metrics").text
        assert 'musetalk_scheduler_refused_total{kind="paced"} 1.0' in metrics
        assert 'musetalk_scheduler_admitted_total{kind="paced"} 1.0' in metrics
        # once the first has gone, the device takes a paced stream again
        deadline = time.monotonic() + 5
        while client.get("/health").json()["active_streams"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert post_audio(client, "/inference/stream/a?realtime=true", short).status_code == 200


def test_a_queued_batch_gets_busy_after_the_queue_timeout(tmp_path):
    engine = FakeEngine(delay_s=0.02)
    timeout_s = 0.5
    with make_server(tmp_path, engine, device_workers=1, queue_timeout_s=timeout_s) as server, \
            httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        with open_stream(client, speech(tmp_path, 20.0)) as running:  # unpaced: holds the one unpaced slot
            chunks = running.iter_bytes()  # held: a dropped iterator closes the connection
            next(chunks)
            started = time.monotonic()
            refused = post_audio(client, "/inference/batch/a", speech(tmp_path, 1.0))
            waited = time.monotonic() - started
        assert refused.status_code == 429
        assert refused.json() == {"detail": f"busy: waited {timeout_s:g} s for the device", "code": "busy"}
        assert refused.headers["Retry-After"] == "1"
        assert waited >= timeout_s
        assert 'musetalk_scheduler_refused_total{kind="unpaced"} 1.0' in client.get("/metrics").text


def test_a_live_stream_stays_on_time_while_a_batch_runs(tmp_path):
    # One worker, 25 ms a frame: the device makes 40 frames/s. The paced stream needs 25 of them;
    # shared evenly with the batch it would get 20 and fall a second behind in its 5 s.
    engine = FakeEngine(delay_s=0.025)
    with make_server(tmp_path, engine, device_workers=1) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "a", media("vr_face2.mp4")).status_code == 200
        batch: dict = {}
        long = speech(tmp_path, 10.0)
        runner = threading.Thread(target=lambda: batch.update(r=post_audio(client, "/inference/batch/a", long)))
        runner.start()
        while engine.produced < 10:  # the batch has the device
            time.sleep(0.01)
        arrivals, body = [], b""
        with open_stream(client, speech(tmp_path, 5.0), realtime="true") as live:
            assert live.status_code == 200
            for chunk in live.iter_bytes():
                body += chunk
                arrivals.extend([time.monotonic()] * (body.count(b"X-Frame-Index") - len(arrivals)))
        batch_still_running = runner.is_alive()
        runner.join()
    parts, closed = parse_mjpeg(body)
    assert closed and [p.headers["X-Frame-Index"] for p in parts] == [str(i) for i in range(125)]
    late = [t - arrivals[0] - i / FPS for i, t in enumerate(arrivals)]
    assert statistics.median(late) < 0.1 and np.percentile(late, 99) < 0.25, \
        f"lateness median {statistics.median(late):.3f} s, p99 {np.percentile(late, 99):.3f} s"
    assert batch_still_running, "the batch ended before the stream: nothing was shared"
    assert batch["r"].status_code == 200
