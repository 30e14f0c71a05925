"""The page behind an ingress path prefix, and with an API key entered in its field."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from browsing import OriginWatch, make_app
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from helpers import LiveServer

PREFIX = "/musetalk"
KEY = "page-secret"


class StripPrefix:
    """What an ingress with a rewrite does: `/musetalk/x` reaches the service as `/x`."""

    def __init__(self, app, prefix: str) -> None:
        self.app, self.prefix = app, prefix
        self.state = app.state  # the tests reach the service's state through the served app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if not path.startswith(self.prefix + "/"):
                from starlette.responses import PlainTextResponse

                await PlainTextResponse("outside the prefix", status_code=404)(scope, receive, send)
                return
            scope = {**scope, "path": path[len(self.prefix):], "raw_path": path[len(self.prefix):].encode()}
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, clips) -> Iterator[LiveServer]:
    """A keyed service behind a path prefix, with the avatar `still` made from one frame."""
    app = make_app(tmp_path_factory.mktemp("keyed") / "results", api_key=KEY)
    with LiveServer(StripPrefix(app, PREFIX)) as server:
        with httpx.Client(base_url=server.url + PREFIX, headers={"X-API-Key": KEY}, timeout=60) as client, \
                clips["still"].open("rb") as f:
            r = client.post("/avatars/preprocess", data={"avatar_id": "still"}, files={"video_file": ("face.png", f)})
            assert r.status_code == 200, r.text
        yield server


def test_the_page_works_behind_a_prefix_with_a_key(context, keyed, clips):
    page = context.new_page()
    watch = OriginWatch(page, keyed.url)
    page.goto(f"{keyed.url}{PREFIX}/")
    status = page.locator("#avatars-status")
    page.wait_for_function("() => document.querySelector('#avatars-status').textContent !== ''")
    assert status.inner_text().startswith("The server needs an API key") and "401 unauthorized" in status.inner_text()
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    # The thumbnail came through fetch with the key header, shown from a blob URL.
    page.wait_for_function(
        "() => document.querySelector('#avatars li[data-avatar-id=still] img')?.naturalWidth === 844")
    assert page.evaluate("() => localStorage.getItem('musetalk.apiKey')") == KEY
    page.select_option("#transport", "websocket")  # WebRTC's own test is test_webrtc.py
    pick(page, "still")
    page.set_input_files("#audio-file", str(clips["speech"]))
    page.click("#play-file")
    page.wait_for_function("() => window.musetalk.session?.stats.speakingFramesDrawn > 5", timeout=60_000)
    sockets = [u for u in watch.urls if u.startswith("ws:")]
    assert sockets == [f"ws://127.0.0.1:{keyed.port}{PREFIX}/inference/realtime/still?key={KEY}&sample_rate=16000"]
    # Every request stayed under the prefix, on the server's origin.
    assert watch.foreign() == [] and watch.errors == []
    assert all(httpx.URL(u).path.startswith(PREFIX + "/") for u in watch.urls if not u.startswith("blob:")), watch.urls
    page.click("#stop")


def pick(page, avatar_id: str, tries: int = 3) -> None:
    """Click an avatar in the list until the page has picked it. On a loaded machine one CI run's
    click missed (the list's thumbnails still loading, the layout moving under the pointer) and the
    page never enabled its buttons; a user would click again, and so does this."""
    for _ in range(tries):
        page.click(f"#avatars li[data-avatar-id={avatar_id}] strong")
        try:
            page.locator(f"#avatars li.selected[data-avatar-id={avatar_id}]").wait_for(timeout=5000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"avatar {avatar_id} not picked after {tries} clicks")


def test_webrtc_behind_a_prefix_with_a_key(context, keyed):
    """The offer goes up with the key header; the answer's Location (a path from the service's root)
    is followed under the prefix, so Stop's DELETE reaches the session."""
    page = context.new_page()
    watch = OriginWatch(page, keyed.url)
    page.goto(f"{keyed.url}{PREFIX}/")
    page.evaluate(f"() => localStorage.setItem('musetalk.apiKey', '{KEY}')")
    page.reload()
    page.click("#avatars li[data-avatar-id=still] strong")  # WebRTC, the default
    page.wait_for_function("() => window.musetalk.session?.ready && window.musetalk.session.stats.framesDrawn > 3",
                           timeout=60_000)
    sessions = keyed.server.config.app.state.musetalk.webrtc.sessions
    assert len(sessions) == 1
    session_id = next(iter(sessions))
    with page.expect_request(lambda r: r.method == "DELETE") as deleted:
        page.click("#stop")
    assert deleted.value.url == f"{keyed.url}{PREFIX}/inference/webrtc/sessions/{session_id}"
    assert deleted.value.headers["x-api-key"] == KEY
    response = deleted.value.response()
    body = response.json()
    assert (response.status, body["message"], body["session_id"]) == (200, "Session ended", session_id)
    assert len(sessions) == 0
    assert watch.foreign() == [] and watch.errors == []
    assert all(httpx.URL(u).path.startswith(PREFIX + "/") for u in watch.urls if not u.startswith("blob:")), watch.urls


def test_the_preview_takes_the_key_as_a_query_parameter(keyed):
    url = f"{keyed.url}{PREFIX}/avatars/still/preview.jpg"
    assert httpx.get(url).json() == {"detail": "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                                     "code": "unauthorized"}
    assert httpx.get(url, params={"key": "wrong"}).status_code == 401
    r = httpx.get(url, params={"key": KEY})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
