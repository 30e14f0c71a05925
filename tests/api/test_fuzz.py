"""Schema-driven fuzzing (schemathesis `--checks all`) against a real server with the lite engine,
bounded: a fixed seed and a few cases per operation. bench/fuzz_bench.py runs over 1,500."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from servers import preprocess, wait_ready
from testkit.fuzzing import OTHER_METHODS, error_shape_problem, fuzz
from testkit.mediatools import first_frames, write_video

SEED = 12
MAX_EXAMPLES = 5  # per operation and phase: about 260 cases in about 10 s
API_KEY = "k" * 32
OPEN_PATHS = {"/health", "/health/live", "/health/ready", "/metrics"}  # no key needed, by design


def lite_server(tmp, **overrides) -> LiveServer:
    return LiveServer(create_app(Settings(_env_file=None, result_dir=tmp / "results", engine="lite", **overrides)))


def test_fuzzing_with_every_check_finds_nothing(tmp_path):
    clip = write_video(first_frames(media("vr_face2.mp4"), 10), tmp_path / "short.mp4", "libx264", 25.0, fmt="mp4")
    key = {"X-API-Key": API_KEY}
    with lite_server(tmp_path, api_key=API_KEY) as server, httpx.Client(base_url=server.url, headers=key) as client:
        wait_ready(server)
        assert preprocess(client, "face2", clip).status_code == 200
        operations = {f"{m.upper()} {p}" for p, ops in client.get("/openapi.json").json()["paths"].items() for m in ops}
        report = fuzz(server.url, tmp_path / "fuzz", max_examples=MAX_EXAMPLES, seed=SEED, headers=key)
        assert report.failures == [], "\n".join(report.failures[:20])
        assert report.cases >= 200 and report.operations == (len(operations), len(operations))
        assert operations | {OTHER_METHODS} == set(report.by_operation)  # every operation, and 405 probes
        assert report.by_status[200] and report.by_status[422] and report.by_status[405]
        assert report.media_refused > 0  # generated uploads reached the decoders
        # The server is still whole afterwards.
        assert client.get("/health").json()["status"] == "running"


def test_the_fuzzer_reports_what_the_schema_does_not_say(tmp_path):
    class Thing(BaseModel):
        name: str

    app = FastAPI()

    @app.get("/things/{thing_id}", response_model=None, responses={200: {"model": Thing}})
    async def thing(thing_id: int) -> JSONResponse:
        if thing_id % 2:
            return JSONResponse({"wrong": thing_id})  # not the declared body
        raise RuntimeError("a bug")  # an undeclared 500, in Starlette's plain-text shape

    with LiveServer(app) as server:
        report = fuzz(server.url, tmp_path / "fuzz", max_examples=10, seed=SEED)
    found = "\n".join(report.failures)
    assert "not_a_server_error" in found and "response_schema_conformance" in found
    assert "500 with content type 'text/plain" in found and "405 with keys ['detail']" in found


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
