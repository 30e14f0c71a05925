"""The demo page over WebRTC (its default) in a real Chromium, against the real service on loopback:
the fake microphone (a loop of pause, 3 s of speech, pause) goes up as the audio track; the avatar
comes back as H.264 in the <video> element and Opus audio; the data channel carries `interrupt`
and the events. Which painted frame is which comes from requestVideoFrameCallback's RTP timestamp
(static/js/webrtc.js)."""

from __future__ import annotations

import time

import cv2
import httpx
import pytest
from browsing import OriginWatch, grab_frames, same_background_changes, wait_until_after_speech
from test_page import mouth_region

from helpers import media
from testkit.mediatools import first_frames, write_video

AVATAR = "rtc"
TIMEOUT_MS = 60_000
FPS = 25
FRAMES = 25  # 1 s of vr_face2 at 512²: cheap to encode, its background repeats every 50 frames
SIZE = 512


@pytest.fixture(scope="module")
def avatar(site, tmp_path_factory) -> str:
    frames = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in first_frames(media("vr_face2.mp4"), FRAMES)]
    clip = write_video(frames, tmp_path_factory.mktemp("rtc") / "face512.mp4", "libx264", FPS)
    with httpx.Client(base_url=site.url, timeout=120) as client, clip.open("rb") as f:
        r = client.post("/avatars/preprocess", data={"avatar_id": AVATAR}, files={"video_file": ("face.mp4", f)})
        assert r.status_code == 200, r.text
    return AVATAR


def open_live(context, site, avatar_id: str):
    page = context.new_page()
    watch = OriginWatch(page, site.url)
    page.goto(site.url + "/")
    page.click(f"#avatars li[data-avatar-id={avatar_id}] strong")
    page.wait_for_function("""() => (window.musetalk.session?.ready && window.musetalk.session.stats.framesDrawn > 3)
        || document.querySelector('#live-status').classList.contains('error')""", timeout=TIMEOUT_MS)
    assert page.evaluate("() => window.musetalk.session?.ready") is not None, page.locator("#live-status").inner_text()
    return page, watch


def stats(page) -> dict:
    """The session's figures, getStats() read now (the page reads it every 500 ms)."""
    return page.evaluate("async () => { await window.musetalk.session.readStats(); return window.musetalk.session.stats; }")


def live_sessions(site) -> int:
    return len(site.server.config.app.state.musetalk.webrtc.sessions)


def wait_until_gone(site, seconds: float = 5) -> None:
    """The server has let the page's session go (DELETE, or the peer connection closed)."""
    deadline = time.monotonic() + seconds
    while live_sessions(site) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_sessions(site) == 0


def test_the_microphone_drives_the_avatar_over_webrtc(context, site, avatar):
    page, watch = open_live(context, site, avatar)
    # Idle at once, in the video element: the avatar's size, decoded from H.264.
    assert page.evaluate("() => [document.querySelector('#video').videoWidth, document.querySelector('#screen').hidden]") \
        == [SIZE, True]
    assert page.locator("#video").is_visible() and not page.locator("#screen").is_visible()
    grab_frames(page, "#video")
    page.click("#mic")
    # The fake microphone's utterance: 0.2 s of pre-roll silence, 3 s of speech, 0.6 s of gate hang
    # (95 frames), then about 1.2 s of silence before the next.
    wait_until_after_speech(page, 95 + 25, TIMEOUT_MS)
    changes = same_background_changes(page, mouth_region(site, avatar), cycle=2 * FRAMES)
    silent = [c for c in changes if c["into"] <= 1]
    spoken = [c for c in changes if 8 <= c["into"] <= 80]
    assert silent and spoken, changes
    # In speech the mouth moves, several times more than the rest (whose change is H.264's noise);
    # in the pre-roll's silence it barely does (its last chunk may hold the onset's first breath).
    moved = max(spoken, key=lambda c: c["inside"])
    assert moved["inside"] > 4 * moved["outside"], spoken
    assert max(c["inside"] for c in silent) < 0.4 * moved["inside"], (silent, moved)
    # The video decodes every frame the server sends, at the avatar's rate (as far as a loaded
    # machine's server keeps it: frame indices advance with the session's clock). A shared VM can
    # stall every process for part of a second (one clean CI run: 17 fps over a 2 s window, the
    # test alone 25; another: 19.5 sent against the browser's own 25 over the same window), so
    # all three must hold over one of up to three windows in a row: a server that cannot keep the
    # rate, or a browser that drops what it is sent, fails all three.
    index_at = "() => window.musetalk.session.stats.lastDrawn.index"
    for _window in range(3):
        before, first_index, t0 = stats(page)["framesDecoded"], page.evaluate(index_at), time.monotonic()
        page.wait_for_timeout(2000)
        s, seconds = stats(page), time.monotonic() - t0
        sent_rate = (page.evaluate(index_at) - first_index) / seconds
        decoded_rate = (s["framesDecoded"] - before) / seconds
        if (sent_rate > 0.75 * FPS and decoded_rate == pytest.approx(sent_rate, rel=0.15)
                and s["fps"] == pytest.approx(sent_rate, rel=0.25)):
            break
    assert decoded_rate == pytest.approx(sent_rate, rel=0.15)
    assert sent_rate > 0.75 * FPS and s["fps"] == pytest.approx(sent_rate, rel=0.25)
    assert s["audioPacketsReceived"] > 100 and s["audioBytesReceived"] > 5000  # Opus, 50 packets a second
    # The latency clock starts at the page's own gate's pre-roll, as on the socket.
    assert 175 <= s["leadInMs"][0] < 500 and s["latenciesMs"][0] > s["leadInMs"][0], s["leadInMs"]
    for figure, unit in (("latency", " ms"), ("bitrate", " kbit/s"), ("jitter", " ms")):
        assert page.locator(f"#fig-{figure}").inner_text().endswith(unit)
    page.click("#stop")
    wait_until_gone(site)
    assert watch.foreign() == [] and watch.errors == []


def test_interrupt_and_stop_over_webrtc(context, site, avatar, clips):
    page, watch = open_live(context, site, avatar)
    page.set_input_files("#audio-file", str(clips["speech"]))
    page.click("#play-file")  # the file's PCM goes on the data channel
    page.wait_for_function("() => window.musetalk.session.stats.speakingFramesDrawn > 10", timeout=TIMEOUT_MS)
    clicked = page.evaluate("() => { const t = performance.now(); document.querySelector('#interrupt').click(); return t; }")
    page.wait_for_function(f"""() => window.musetalk.session.stats.presented.some(
        (f) => f.expectedDisplayTime > {clicked} && f.speaking === false)""", timeout=TIMEOUT_MS)
    after = [f for f in stats(page)["presented"] if f["expectedDisplayTime"] > clicked]
    speaking_after = next(i for i, f in enumerate(after) if f["speaking"] is False)
    assert speaking_after <= 4, after[:8]  # idle within a few frames (the jitter buffer holds 1-3)
    assert page.locator("#live-status").inner_text() == "Live, idle: 512×512 at 25 fps. Talk or speak a file."
    assert live_sessions(site) == 1
    # Stop: an idle frame is left on screen, the resource is deleted, the connection closed.
    page.click("#play-file")
    page.wait_for_function("() => window.musetalk.session?.stats.utterance === 2 && "
                           "window.musetalk.session.stats.lastDrawn.speaking", timeout=TIMEOUT_MS)
    page.click("#stop")
    page.wait_for_function("() => window.musetalk.lastSession?.pc.connectionState === 'closed'", timeout=TIMEOUT_MS)
    last = page.evaluate("() => window.musetalk.lastSession.stats.lastDrawn")
    assert last["speaking"] is False
    assert page.evaluate("() => window.musetalk.lastSession.pc.connectionState") == "closed"
    # The last frame stays on screen, on the canvas: the closed connection's video goes blank.
    assert page.locator("#screen").is_visible() and not page.locator("#video").is_visible()
    assert page.evaluate("() => document.querySelector('#screen').width") == SIZE
    wait_until_gone(site)
    assert watch.foreign() == [] and watch.errors == []


def test_a_closed_tab_ends_its_session(context, site, avatar):
    page, _ = open_live(context, site, avatar)
    assert live_sessions(site) == 1
    page.close(run_before_unload=True)
    wait_until_gone(site)
