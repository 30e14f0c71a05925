"""SIGTERM on a real `musetalk-server serve` process: drain, end the streams cleanly, exit in the grace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from helpers import REPO, media
from servers import post_audio, preprocess
from testkit.mediatools import parse_mjpeg

GRACE_S = 3.0
EXIT_MARGIN_S = 5.0  # interpreter teardown on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, MUSETALK_PORT=str(port), MUSETALK_RESULT_DIR=str(tmp_path / "results"),
               MUSETALK_ENGINE="lite", MUSETALK_SHUTDOWN_GRACE_S=str(GRACE_S), GLOG_minloglevel="2",
               PYTHONPATH=str(REPO / "service"))
    proc = subprocess.Popen([sys.executable, "-m", "musetalk_server", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not become ready: {proc.communicate()[1].decode()[-2000:]}")


def test_sigterm_drains_ends_the_stream_with_its_error_part_and_exits_within_the_grace(tmp_path):
    proc, url = start_server(tmp_path)
    try:
        with httpx.Client(base_url=url) as client:
            assert preprocess(client, "a", media("lp_d11.mp4")).status_code == 200
            with media("mt_eng.wav").open("rb") as f, client.stream(
                    "POST", "/inference/stream/a", params={"realtime": "true"},
                    files={"audio_file": ("a.wav", f)}, timeout=60) as live:
                assert live.status_code == 200
                chunks = live.iter_bytes()  # held: a dropped iterator closes the connection
                body = next(chunks)
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                ready = client.get("/health/ready")
                assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
                refused = post_audio(client, "/inference/stream/a", media("vr_audio1.wav"))
                assert refused.status_code == 503
                assert refused.json() == {"detail": "the server is shutting down", "code": "not_ready"}
                body += b"".join(chunks)
            ended = time.monotonic() - signalled
        rc = proc.wait(timeout=GRACE_S + EXIT_MARGIN_S)
        exited = time.monotonic() - signalled
    finally:
        proc.kill()
        proc.wait()
    parts, closed = parse_mjpeg(body)
    assert closed, "the stream was cut instead of ending"
    last = parts[-1]
    assert last.headers["Content-Type"] == "application/json" and last.headers["X-Stream-Error"] == "true"
    assert json.loads(last.body) == {"detail": "the server is shutting down", "code": "not_ready"}
    frames = parts[:-1]
    assert [p.headers["X-Frame-Index"] for p in frames] == [str(i) for i in range(len(frames))]  # none lost
    assert 0 < len(frames) < 1500  # 60 s of audio at 25 fps would be 1500
    assert ended <= GRACE_S + 1.0, f"the stream ended {ended:.1f} s after SIGTERM"
    assert rc == 0
    assert exited <= GRACE_S + EXIT_MARGIN_S
