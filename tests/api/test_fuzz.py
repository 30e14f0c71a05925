"""Schema-driven fuzzing (schemathesis) against a real server with the lite engine, bounded:
a fixed seed and a few cases per operation. bench/fuzz_bench.py runs over a thousand."""

from __future__ import annotations

import time

import httpx

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from servers import preprocess
from testkit.fuzzing import error_shape_problem, fuzz
from testkit.mediatools import first_frames, write_video

SEED = 12
CASES_PER_OPERATION = 8
API_KEY = "k" * 32
OPEN_PATHS = {"/health", "/health/live", "/health/ready", "/metrics"}  # no key needed, by design


def lite_server(tmp, **overrides) -> LiveServer:
    return LiveServer(create_app(Settings(_env_file=None, result_dir=tmp / "results", engine="lite", **overrides)))


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "engine never got ready"
        time.sleep(0.1)


def test_fuzzing_finds_no_5xx_no_dropped_connection_and_one_error_shape(tmp_path):
    clip = write_video(first_frames(media("vr_face2.mp4"), 10), tmp_path / "short.mp4", "libx264", 25.0, fmt="mp4")
    key = {"X-API-Key": API_KEY}
    with lite_server(tmp_path, api_key=API_KEY) as server, httpx.Client(base_url=server.url, headers=key) as client:
        _wait_ready(client)
        assert preprocess(client, "face2", clip).status_code == 200
        report = fuzz(server.url, cases_per_operation=CASES_PER_OPERATION, seed=SEED, headers=key, avatar_id="face2")
        assert report.failures == []
        assert report.cases >= 80
        assert any(400 <= s < 500 for s in report.by_status)  # it did reach the validation paths
        # The server is still whole afterwards.
        assert client.get("/health").json()["status"] == "running"


def test_every_avatar_and_inference_route_needs_the_key(tmp_path):
    app = create_app(Settings(_env_file=None, result_dir=tmp_path / "results", engine="lite", api_key=API_KEY))
    routes = [(method.upper(), path) for path, item in app.openapi()["paths"].items() if path not in OPEN_PATHS
              for method in item]
    assert len(routes) >= 6
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        for method, path in routes:
            url = path.replace("{avatar_id}", "face2")
            for headers in ({}, {"X-API-Key": "k" * 31 + "x"}, {"Authorization": "Bearer " + "k" * 33}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["code"] == "unauthorized"
        for path in OPEN_PATHS:
            assert client.get(path).status_code != 401


def test_the_error_shape_check_can_fail():
    assert error_shape_problem(404, "application/json", b'{"detail": "x", "code": "y"}') is None
    assert error_shape_problem(404, "application/json", b'{"detail": "x"}') == "404 with keys ['detail']"
    assert error_shape_problem(500, "text/plain", b"Internal Server Error") == "500 with content type 'text/plain'"
    assert error_shape_problem(422, "application/json", b'{"detail": "", "code": "y"}') is not None
