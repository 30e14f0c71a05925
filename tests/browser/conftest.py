"""A real Chromium (Debian's, driven by Playwright) against the real service on loopback.

One browser per test session, a fresh context per test. `make test` installs the `chromium`
package when it is missing (see .ci/chromium.sh).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import fake_realtime
import pytest
from helpers import LiveServer, media
from mediatools import first_frames, transcode_audio, write_video
from musetalk_server.api import create_app
from musetalk_server.config import Settings

# The real-time endpoint the page talks to. Until `WS /inference/realtime/{avatar_id}` (issue 9)
# is in the service, the tests add this stand-in that speaks its contract. Once it is, set this
# to None and the same tests run against the real endpoint (the one-line switch).
REALTIME_STAND_IN = fake_realtime.install

CLIP_FRAMES = 50  # 2 s of vr_face2: a real face, quick to preprocess
SPEECH = "vr_audio1.wav"  # English speech; also the fake microphone's input
LAUNCH_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    # The microphone: permission granted without a prompt, fed from a speech file (looped).
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (.ci/chromium.sh)")
    return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator:
    from playwright.sync_api import sync_playwright

    mic = media(SPEECH)
    with sync_playwright() as p:
        # Playwright gives each launch a fresh temporary --user-data-dir of its own.
        b = p.chromium.launch(executable_path=chromium_path(), headless=True,
                              args=[*LAUNCH_FLAGS, f"--use-file-for-fake-audio-capture={mic}"])
        yield b
        b.close()


def make_app(result_dir: Path, **overrides):
    app = create_app(Settings(_env_file=None, result_dir=result_dir, engine="lite", **overrides))
    if REALTIME_STAND_IN is not None:
        REALTIME_STAND_IN(app)
    return app


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[LiveServer]:
    """The service with the lite engine, no key, no CORS."""
    with LiveServer(make_app(tmp_path_factory.mktemp("site") / "results")) as server:
        yield server


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Small real inputs: a 2 s face clip, its first frame as a still, 3 s of speech, and a text file
    posing as a video."""
    d = tmp_path_factory.mktemp("clips")
    frames = first_frames(media("vr_face2.mp4"), CLIP_FRAMES)
    face = write_video(frames, d / "face.mp4", "libx264", 25)
    still = d / "face.png"
    cv2.imwrite(str(still), frames[0])
    speech = transcode_audio(media(SPEECH), d / "speech.wav", "pcm_s16le", rate=16_000, seconds=3.0)
    fake = d / "notes.mp4"
    fake.write_text("not a video\n")
    return {"face": face, "still": still, "speech": speech, "fake": fake}


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


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["microphone"])
    yield ctx
    ctx.close()
