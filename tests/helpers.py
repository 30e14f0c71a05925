"""Shared test helpers: the real media beside the repo, and servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"test media {path} is missing; the shared/ folder must sit beside the repo")
    return path


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def first_stream_bytes(url: str, audio: Path, limit: int = 20_000) -> tuple[int, str, bytes]:
    """POST `audio` to a stream URL and read only its first `limit` bytes: (status, type, bytes)."""
    with open(audio, "rb") as f, httpx.stream("POST", url, files={"audio_file": (audio.name, f, "audio/wav")},
                                              timeout=60) as response:
        got = b""
        for chunk in response.iter_bytes():
            got += chunk
            if len(got) >= limit:
                break
        return response.status_code, response.headers.get("content-type", ""), got
