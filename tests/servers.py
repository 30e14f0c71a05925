"""Start the real app on real uvicorn, and talk to it like a client would."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from fakes import FakeEngine
from helpers import LiveServer
from musetalk_server.api import create_app
from musetalk_server.config import Settings


def make_server(tmp: Path, engine=None, **overrides) -> LiveServer:
    settings = Settings(_env_file=None, result_dir=tmp / "results", **overrides)
    return LiveServer(create_app(settings, engine=engine or FakeEngine()))


READY_TIMEOUT_S = 60.0


def wait_ready(server: LiveServer) -> LiveServer:
    """`server`, once /health/ready answers 200 (the engine loads in the lifespan's background)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (ready := httpx.get(server.url + "/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, f"the engine did not load in {READY_TIMEOUT_S:g} s: {ready.text}"
        time.sleep(0.05)
    return server


def preprocess(client: httpx.Client, avatar_id: str, clip: Path, **data) -> httpx.Response:
    with clip.open("rb") as f:
        return client.post("/avatars/preprocess", data={"avatar_id": avatar_id, **data},
                           files={"video_file": (clip.name, f, "application/octet-stream")}, timeout=120)


def post_audio(client: httpx.Client, path: str, audio: Path, **kw) -> httpx.Response:
    with audio.open("rb") as f:
        return client.post(path, files={"audio_file": (audio.name, f, "application/octet-stream")}, timeout=120, **kw)
