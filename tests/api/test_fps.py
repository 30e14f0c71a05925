"""An avatar renders at its own frame rate, whatever MUSETALK_FPS says when it is served."""

from __future__ import annotations

import math

import httpx

from helpers import media
from servers import make_server, post_audio, preprocess
from testkit.mediatools import parse_mjpeg, read_mp4

AUDIO = "vr_audio1.wav"  # 5.016 s


def test_an_avatar_made_at_25_fps_streams_at_25_under_a_30_fps_server(tmp_path):
    with make_server(tmp_path, fps=25) as server, httpx.Client(base_url=server.url) as client:
        r = preprocess(client, "a", media("vr_face2.mp4"))
        assert r.status_code == 200 and r.json()["info"]["fps"] == 25
    # Same store, served at another rate: the background was re-timed onto 25 fps at preprocess.
    with make_server(tmp_path, fps=30) as server, httpx.Client(base_url=server.url) as client:
        r = post_audio(client, "/inference/stream/a", media(AUDIO))
        assert r.status_code == 200
        expected = math.floor(5.016 * 25)
        assert r.headers["X-Frame-Rate"] == "25" and int(r.headers["X-Frame-Count"]) == expected
        parts, closed = parse_mjpeg(r.content)
        assert closed and len(parts) == expected
        assert float(parts[-1].headers["X-Timestamp-Ms"]) == (expected - 1) * 40.0
        r = post_audio(client, "/inference/batch/a", media(AUDIO))
        assert r.status_code == 200 and r.headers["X-Frame-Rate"] == "25"
        out = tmp_path / "a.mp4"
        out.write_bytes(r.content)
        facts = read_mp4(out)
        assert facts.frames == expected and abs(facts.fps - 25) < 1e-6
        # A new avatar takes the server's clock.
        r = preprocess(client, "b", media("vr_face2.mp4"))
        assert r.status_code == 200 and r.json()["info"]["fps"] == 30
        r = post_audio(client, "/inference/stream/b", media(AUDIO))
        assert r.headers["X-Frame-Rate"] == "30" and int(r.headers["X-Frame-Count"]) == math.floor(5.016 * 30)
