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


# Installed into a page: every painted frame of its session (a quarter of its size), by frame index
# (over WebRTC a frame painted before the index is known keeps its RTP timestamp, resolved later).
# A speaking frame can then be set against an idle frame with the same background: an avatar of n
# frames ping-pongs through its background every 2n frames, so the two differ only in the mouth.
GRAB_FRAMES = """([selector, scale, kept]) => {
    const session = window.musetalk.session;
    const element = document.querySelector(selector);
    const grabs = window.__grabs = {frames: [], scale};
    const canvas = document.createElement('canvas');
    const update = session.onUpdate;
    let last = null;
    session.onUpdate = (stats) => {
        update(stats);
        const drawn = stats.lastDrawn;
        if (!drawn || drawn === last) return;  // a figures update, not a paint
        last = drawn;
        const w = Math.round((element.videoWidth || element.width) * scale);
        const h = Math.round((element.videoHeight || element.height) * scale);
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(element, 0, 0, w, h);
        grabs.frames.push({...drawn, data: ctx.getImageData(0, 0, w, h).data, w, h});
        if (grabs.frames.length > kept) grabs.frames.shift();
    };
}"""

# Pairs (a speaking frame of the first utterance grabbed, the nearest idle frame over the same
# background) with the mean absolute change inside `box` and outside it.
COMPARE_GRABS = """([box, cycle]) => {
    const session = window.musetalk.session;
    const grabs = window.__grabs;
    const frames = grabs.frames.map((f) => {
        const index = f.index ?? (session.indexOf ? session.indexOf(f.rtp) : null);
        const speaking = session.speaks && index !== null ? session.speaks(index) : f.speaking;
        return {...f, index, speaking};
    }).filter((f) => f.index !== null);
    const first = frames.find((f) => f.speaking);
    if (!first) return [];
    const end = frames.find((f) => !f.speaking && f.index > first.index);
    const [x0, y0, x1, y1] = box.map((v) => v * grabs.scale);
    const pairs = [];
    for (const a of frames) {
        if (!a.speaking || a.index < first.index || (end && a.index > end.index)) continue;
        const idle = frames.filter((b) => !b.speaking && (b.index - a.index) % cycle === 0);
        if (!idle.length) continue;
        const b = idle.reduce((p, q) => (Math.abs(q.index - a.index) < Math.abs(p.index - a.index) ? q : p));
        let inside = 0, nIn = 0, outside = 0, nOut = 0;
        for (let y = 0; y < a.h; y++) for (let x = 0; x < a.w; x++) {
            const i = 4 * (y * a.w + x);
            let d = 0;
            for (let ch = 0; ch < 3; ch++) d += Math.abs(a.data[i + ch] - b.data[i + ch]);
            if (x >= x0 && x < x1 && y >= y0 && y < y1) { inside += d; nIn++; } else { outside += d; nOut++; }
        }
        pairs.push({into: a.index - first.index, pair: [a.index, b.index], inside: inside / nIn, outside: outside / nOut});
    }
    return pairs;
}"""


def grab_frames(page, selector: str, kept: int = 400) -> None:
    """From now on, keep the last `kept` painted frames of the page's session (see GRAB_FRAMES)."""
    page.evaluate(GRAB_FRAMES, [selector, 0.25, kept])


def same_background_changes(page, box, *, cycle: int) -> list[dict]:
    """For each speaking frame of the first utterance grabbed that has an idle frame over the same
    background (`cycle` frames apart, or a multiple): `into` (frames into the utterance), `pair`,
    and the mean absolute change inside `box` (the mouth) and outside it. A speaking frame in a pause
    of the speech may show the idle frame's shut mouth exactly."""
    return page.evaluate(COMPARE_GRABS, [list(box), cycle])


def wait_until_after_speech(page, frames: int, timeout_ms: int) -> None:
    """Wait until a frame `frames` after the first speaking frame grabbed has been painted."""
    page.wait_for_function("""(frames) => {
        const session = window.musetalk.session;
        const index = (f) => f.index ?? (session.indexOf ? session.indexOf(f.rtp) : null);
        const speaks = (f) => (session.speaks && index(f) !== null ? session.speaks(index(f)) : f.speaking);
        const grabbed = window.__grabs.frames;
        const first = grabbed.find(speaks);
        return Boolean(first) && index(grabbed.at(-1)) >= index(first) + frames;
    }""", arg=frames, timeout=timeout_ms)
