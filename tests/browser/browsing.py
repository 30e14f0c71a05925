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


# Installed into a page: paints of one session's frames by index (at a quarter of their size), so
# a speaking frame can be set against the idle frame with the same background one ping-pong cycle
# later (an avatar of n frames repeats its background every 2n frames): only the mouth may differ.
# Pairs are taken as they come (a frame that came too late is never painted): idle frames whose
# counterpart a cycle earlier was painted speaking, at least `offset` frames into the utterance.
GRAB_SAME_BACKGROUND = """([selector, offset, cycle, scale, wanted]) => {
    const session = window.musetalk.session;
    const element = document.querySelector(selector);
    const grabs = window.__grabs = {pairs: [], first: null, frames: new Map(), scale};
    const canvas = document.createElement('canvas');
    const grab = (drawn) => {
        const w = Math.round((element.videoWidth || element.width) * scale);
        const h = Math.round((element.videoHeight || element.height) * scale);
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(element, 0, 0, w, h);
        grabs.frames.set(drawn.index, {data: ctx.getImageData(0, 0, w, h).data, w, h, speaking: drawn.speaking});
    };
    const update = session.onUpdate;
    session.onUpdate = (stats) => {
        update(stats);
        const drawn = stats.lastDrawn;
        if (grabs.pairs.length >= wanted || !drawn || drawn.index === null || drawn.index === grabs.lastIndex) return;
        grabs.lastIndex = drawn.index;
        if (drawn.speaking && grabs.first === null) grabs.first = drawn.index;
        if (grabs.first === null || drawn.index < grabs.first + offset) return;
        if (drawn.speaking) { grab(drawn); return; }
        if (!grabs.frames.has(drawn.index - cycle)) return;
        grab(drawn);
        grabs.pairs.push([drawn.index - cycle, drawn.index]);
    };
}"""

COMPARE_GRABS = """([x0, y0, x1, y1]) => window.__grabs.pairs.map((pair) => {
    const grabs = window.__grabs;
    const [a, b] = pair.map((i) => grabs.frames.get(i));
    [x0, y0, x1, y1] = [x0, y0, x1, y1].map((v) => v * grabs.scale);
    let inside = 0, nIn = 0, outside = 0, nOut = 0;
    for (let y = 0; y < a.h; y++) for (let x = 0; x < a.w; x++) {
        const i = 4 * (y * a.w + x);
        let d = 0;
        for (let ch = 0; ch < 3; ch++) d += Math.abs(a.data[i + ch] - b.data[i + ch]);
        if (x >= x0 && x < x1 && y >= y0 && y < y1) { inside += d; nIn++; } else { outside += d; nOut++; }
    }
    return {inside: inside / nIn, outside: outside / nOut, speaking: [a.speaking, b.speaking], pair};
})"""


def same_background_changes(page, selector: str, box, *, offset: int, cycle: int, pairs: int,
                            timeout_ms: int) -> list[dict]:
    """For `pairs` frames at least `offset` into the utterance (speaking) and the frames `cycle` later
    (idle by then, over the same background): the mean absolute change inside `box` and outside it.
    A speaking frame in a pause of the speech may show the idle frame's shut mouth exactly."""
    page.evaluate(GRAB_SAME_BACKGROUND, [selector, offset, cycle, 0.25, pairs])
    page.wait_for_function(f"() => window.__grabs.pairs.length >= {pairs}", timeout=timeout_ms)
    return page.evaluate(COMPARE_GRABS, list(box))
