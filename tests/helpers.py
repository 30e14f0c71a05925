"""Test helpers: the test media and a live server (from testkit, which the benchmarks share), and a stream's first bytes."""

from __future__ import annotations

from pathlib import Path

import httpx

from testkit.live_server import LiveServer
from testkit.media import REPO, media

__all__ = ["REPO", "LiveServer", "first_stream_bytes", "media"]


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
