"""Helpers of the browser tests: the app they serve (the real service, lite engine, the real
real-time endpoint), the browser's path, and a watch on every request a page makes."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.face.landmarks import LIPS_OUTER


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (.ci/debian_packages.sh)")
    return path


def make_app(result_dir: Path, **overrides):
    return create_app(Settings(_env_file=None, result_dir=result_dir, engine="lite", **overrides))


class OriginWatch:
    """Every request a page makes (HTTP and WebSocket), to prove none leaves the server's origin;
    and every uncaught script error."""

    def __init__(self, page, origin: str) -> None:
        self.origin, self.urls, self.errors = origin, [], []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def foreign(self) -> list[str]:
        def origin_of(url: str) -> str:
            url = url.removeprefix("blob:")
            parts = urlsplit(url)
            scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
            return f"{scheme}://{parts.netloc}"

        return [u for u in self.urls if not u.startswith("data:") and origin_of(u) != self.origin]


def mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the outer lips of one frame's landmarks."""
    lips = landmarks[list(LIPS_OUTER)]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    return int(x0), int(y0), int(x1), int(y1)
