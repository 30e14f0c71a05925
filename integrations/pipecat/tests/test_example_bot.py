"""End to end: examples/pipecat_bot.py (a real Pipecat pipeline, Pipecat's SmallWebRTC transport)
against a real MuseTalk server; Debian's Chromium connects to it, and its <video> shows the
avatar's mouth moving while the bot speaks a reply, and still before it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from musetalk_pipecat.wav_speaker import read_wav_mono
from PIL import Image

from conftest import MEDIA, REPO, RunningServer, _free_port
from musetalk_client import Client, RealtimeFrame

EXAMPLE = REPO / "examples" / "pipecat_bot.py"
START_S = 60.0
TIMEOUT_MS = 30_000
BOX_FRAMES = 40  # 1.6 s of speaking frames find the mouth
LAUNCH_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--autoplay-policy=no-user-gesture-required",
                # Host candidates as plain loopback addresses, not mDNS names aiortc would have to resolve.
                "--disable-features=WebRtcHideLocalIpsWithMdns"]


def jpegs_of(server: RunningServer, count: int, speech: bytes | None = None) -> list[bytes]:
    """The first `count` frames of a session (speaking `speech` from frame 0, if given)."""
    with Client(server.url) as client, client.realtime(server.avatar_id, sample_rate=16000) as rt:
        if speech:
            rt.send_audio(speech)
            rt.end()
        frames: list[bytes] = []
        while len(frames) < count:
            item = rt.receive(timeout=10)
            if isinstance(item, RealtimeFrame):
                frames.append(item.jpeg)
    return frames


def idle_and_speaking(server: RunningServer) -> tuple[list[bytes], list[bytes]]:
    """Every idle frame (the idle video plays the avatar's frames forward, then back), and the
    first frames of a session that speaks from frame 0. Taken before the bot's own session opens:
    under load the server refuses a session that would make the running ones late."""
    with Client(server.url) as client:
        frames = client.avatar(server.avatar_id)["info"]["frames"]
    # Speech from its first frame: speech.wav's first 3 s are room noise, which leaves the mouth shut.
    speech, rate = read_wav_mono(MEDIA / "speech.wav", seconds=6.0)
    speech = speech[3 * rate * 2:]  # PCM16 mono: two bytes a sample
    return jpegs_of(server, frames), jpegs_of(server, BOX_FRAMES, speech)


def mouth_and_idle(idle: list[bytes], speaking: list[bytes], size: tuple[int, int]
                   ) -> tuple[tuple[int, int, int, int], list[np.ndarray]]:
    """At the browser's video `size`: the mouth's box, where speech changes the picture (frame k
    idle against frame k speaking: the same background frame, since both sessions count from 0),
    padded; and that box in every idle frame."""
    idle_frames = [scaled(jpeg, size) for jpeg in idle]
    change = np.max([np.abs(a - scaled(b, size)).max(axis=2) for a, b in zip(idle_frames, speaking, strict=False)],
                    axis=0)
    ys, xs = np.nonzero(change > 40)
    pad = 4
    x0, y0, x1, y1 = int(xs.min()) - pad, int(ys.min()) - pad, int(xs.max()) + pad, int(ys.max()) + pad
    return (x0, y0, x1, y1), [frame[y0:y1, x0:x1] for frame in idle_frames]


def scaled(jpeg: bytes, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.int16)


def distance_to_idle(crop: np.ndarray, idle: list[np.ndarray]) -> float:
    """How far a shown mouth is from every mouth of the idle cycle (mean absolute difference to the
    nearest): codec noise while idle, an open mouth while speaking."""
    return min(float(np.abs(crop - frame).mean()) for frame in idle)


@pytest.fixture
def bot_page(musetalk_server: RunningServer, tmp_path) -> Iterator[str]:
    """The example, run as its README says, on a free port; its URL."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "clients" / "python"),
                                                       os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "bot.log"
    with log.open("wb") as sink:
        bot = subprocess.Popen([sys.executable, str(EXAMPLE), "--url", musetalk_server.url,
                                "--avatar", musetalk_server.avatar_id, "--port", str(port), "--seconds", "4"],
                               env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_S
    while True:
        assert bot.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    yield url
    bot.terminate()
    try:
        bot.wait(timeout=15)
    except subprocess.TimeoutExpired:
        bot.kill()


SAMPLE_JS = """async ([[x0, y0, x1, y1], ms]) => {
    // The mouth's box of the shown video frame every 80 ms, as RGB rows.
    const v = window.bot.video, c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d", {willReadFrequently: true});
    const crops = [], end = performance.now() + ms;
    while (performance.now() < end) {
        g.drawImage(v, 0, 0);
        const d = g.getImageData(x0, y0, x1 - x0, y1 - y0).data, crop = [];
        for (let y = 0; y < y1 - y0; y++) for (let x = 0; x < x1 - x0; x++) {
            const i = 4 * (y * (x1 - x0) + x);
            crop.push(d[i], d[i + 1], d[i + 2]);
        }
        crops.push(crop);
        await new Promise((r) => setTimeout(r, 80));
    }
    return {crops, width: c.width, height: c.height};
}"""


def test_the_browser_sees_the_avatar_speak_the_reply(musetalk_server, bot_page):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is missing: `make test` installs it (.ci/debian_packages.sh)"
    idle, speaking = idle_and_speaking(musetalk_server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page()
            page.goto(bot_page)
            page.click("#connect")
            page.wait_for_function("() => window.bot && window.bot.video.readyState >= 2 "
                                   "&& window.bot.video.currentTime > 1", timeout=TIMEOUT_MS)
            size = page.evaluate("() => [window.bot.video.videoWidth, window.bot.video.videoHeight]")
            box, idle_mouths = mouth_and_idle(idle, speaking, tuple(size))
            before = page.evaluate(SAMPLE_JS, [list(box), 1500])
            page.click("#speak")
            page.wait_for_timeout(300)  # the reply's first frame is about 0.3 s out
            # The 4 s reply, and room for the transport's audio queue to lag behind the session
            # (1.3-2.4 s measured at a load of 7-9 on 2 cores, more when busier).
            during = page.evaluate(SAMPLE_JS, [list(box), 12000])
        finally:
            browser.close()
    assert max(size) <= 512  # the example's cap on the video it sends
    shape = idle_mouths[0].shape
    quiet, talking = ([distance_to_idle(np.array(c, dtype=np.int16).reshape(shape), idle_mouths) for c in seen["crops"]]
                      for seen in (before, during))
    assert len(quiet) >= 8 and len(talking) >= 12
    # Before the reply every shown mouth is one of the idle cycle's, up to the codec's noise; during
    # it, many are mouths the idle cycle never shows: at least a second's worth of samples (the
    # speech has pauses, and where in the window the reply falls depends on the lag).
    noise = max(quiet)
    assert sum(d > 2 * noise for d in talking) >= 12, (quiet, talking)
