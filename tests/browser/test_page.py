"""The demo page at `/` in a real Chromium: avatars, a live session from a file and from the
microphone, the MP4 download, error messages, and not one request off the server's origin."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from browsing import OriginWatch, grab_frames, make_app, mouth_box, same_background_changes, wait_until_after_speech

from helpers import REPO, LiveServer
from testkit.mediatools import read_mp4

AVATAR = "face2"
CLIP_FRAMES = 50  # conftest.CLIP_FRAMES: the avatar's frames
TIMEOUT_MS = 60_000
SCREENSHOT = REPO / "docs" / "browser-demo.png"


def open_page(context, site, transport: str = "websocket"):
    page = context.new_page()
    watch = OriginWatch(page, site.url)
    page.on("dialog", lambda d: d.accept())
    page.goto(site.url + "/")
    assert page.locator("#transport").input_value() == "webrtc"  # the default
    page.select_option("#transport", transport)
    return page, watch


def create_through_page(page, clip: Path, avatar_id: str, **fields) -> str:
    page.fill("input[name=avatar_id]", avatar_id)
    page.set_input_files("input[name=video_file]", str(clip))
    for name, value in fields.items():
        page.fill(f"input[name={name}]", str(value))
    page.click("#create")  # sets the status to "Uploading…" at once
    page.wait_for_function("""() => document.querySelector('#create-progress').hidden
        && !/^(Uploading|Processing)/.test(document.querySelector('#create-status').textContent)""",
                           timeout=TIMEOUT_MS)
    return page.locator("#create-status").inner_text()


@pytest.fixture(scope="module")
def avatar(browser, site, clips):
    """The avatar, created through the page (upload, progress, processing, listed with a thumbnail)."""
    context = browser.new_context()
    page, watch = open_page(context, site)
    text = create_through_page(page, clips["face"], AVATAR, bbox_shift=4)
    assert re.search(rf"Avatar {AVATAR} is ready: 50 frames · 25 fps · 844×844 · bbox_shift 4", text), text
    item = page.locator(f"#avatars li[data-avatar-id={AVATAR}]")
    assert "selected" in item.get_attribute("class")
    page.wait_for_function(
        f"() => document.querySelector('#avatars li[data-avatar-id={AVATAR}] img').naturalWidth === 844")
    assert watch.foreign() == [] and watch.errors == []
    context.close()
    with httpx.Client(base_url=site.url) as client:
        info = client.get(f"/avatars/{AVATAR}").json()["info"]
    assert info["frames"] == 50 and info["bbox_shift"] == 4
    return AVATAR


def select(page, avatar_id: str) -> None:
    page.click(f"#avatars li[data-avatar-id={avatar_id}] strong")
    page.wait_for_function("() => !document.querySelector('#mic').disabled")


def canvas_regions(page, box) -> dict:
    """Mean absolute change of the canvas since the last call, inside `box` and outside it."""
    return page.evaluate("""([x0, y0, x1, y1]) => {
        const c = document.querySelector('#screen');
        const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const before = window.__lastCanvas; window.__lastCanvas = now;
        if (!before || before.length !== now.length) return null;
        let inside = 0, nIn = 0, outside = 0, nOut = 0, lit = 0;
        for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
            const i = 4 * (y * c.width + x);
            let d = 0;
            for (let ch = 0; ch < 3; ch++) d += Math.abs(now[i + ch] - before[i + ch]);
            lit += now[i] + now[i + 1] + now[i + 2];
            if (x >= x0 && x < x1 && y >= y0 && y < y1) { inside += d; nIn++; } else { outside += d; nOut++; }
        }
        return {inside: inside / nIn, outside: outside / nOut, brightness: lit / (3 * nIn + 3 * nOut)};
    }""", list(box))


def mouth_region(site, avatar_id: str) -> tuple[int, int, int, int]:
    """The union of the mouth boxes over the avatar's frames, from its stored landmarks, padded."""
    results = site.server.config.app.state.musetalk.runtime.store.path(avatar_id)
    marks = np.load(results / "landmarks.npy")
    boxes = np.array([mouth_box(m) for m in marks])
    pad = 10
    return (int(boxes[:, 0].min()) - pad, int(boxes[:, 1].min()) - pad,
            int(boxes[:, 2].max()) + pad, int(boxes[:, 3].max()) + pad)


def stats(page) -> dict:
    return page.evaluate("() => window.musetalk.session && window.musetalk.session.stats")


def status(page) -> str:
    return page.locator("#live-status").inner_text()


LIVE_BUTTONS = ("#mic", "#play-file", "#interrupt", "#stop", "#download")


def test_page_loads_everything_from_its_own_origin(context, site):
    page, watch = open_page(context, site)
    page.wait_for_load_state("networkidle")
    assert page.title() == "MuseTalk Server"
    assert page.locator("#avatars-status").inner_text() in ("", "No avatars yet: create one below.")
    # The page, its CSS, its modules, the avatar list: all requested, all from this origin.
    paths = {httpx.URL(u).path for u in watch.urls}
    assert {"/", "/static/style.css", "/static/js/main.js", "/static/js/api.js", "/static/js/live.js",
            "/avatars"} <= paths
    # Nothing picked yet: the live buttons wait, and the page says what to do instead of a black box.
    assert all(page.locator(b).is_disabled() for b in LIVE_BUTTONS)
    assert page.locator("#screen-hint").is_visible() and "Pick an avatar" in page.locator("#screen-hint").inner_text()
    assert status(page) == "Pick an avatar on the left (or create one) to go live."
    assert watch.foreign() == [] and watch.errors == []


def test_picking_an_avatar_shows_it_idle_at_once(context, site, avatar):
    page, watch = open_page(context, site)
    select(page, avatar)
    # No audio sent: the session opened on the click, and its idle frames are painted.
    page.wait_for_function("() => window.musetalk.session?.stats.framesDrawn >= 5", timeout=TIMEOUT_MS)
    assert canvas_regions(page, (0, 0, 1, 1)) is None  # the first reading only stores the canvas
    change = canvas_regions(page, (0, 0, 1, 1))
    assert change["brightness"] > 20, change  # the avatar, not a black canvas
    s = stats(page)
    assert s["speakingFrames"] == 0 and s["utterance"] == 0 and s["lastDrawn"]["speaking"] is False
    assert not page.locator("#screen-hint").is_visible()
    assert page.locator("#screen").is_visible() and not page.locator("#video").is_visible()  # the socket's canvas
    assert status(page) == "Live, idle: 844×844 at 25 fps. Talk or speak a file."
    assert not page.locator("#interrupt").is_disabled() and not page.locator("#stop").is_disabled()
    assert watch.foreign() == [] and watch.errors == []


def test_a_file_drives_the_avatar_live(context, site, avatar, clips):
    page, watch = open_page(context, site)
    select(page, avatar)
    page.set_input_files("#audio-file", str(clips["speech"]))
    page.wait_for_function("() => window.musetalk.session?.ready", timeout=TIMEOUT_MS)
    grab_frames(page, "#screen")
    page.click("#play-file")
    # Until idle frames over the backgrounds of the whole utterance (3 s, 75 frames) have been painted.
    wait_until_after_speech(page, 2 * CLIP_FRAMES + 76, TIMEOUT_MS)
    # Frames of the utterance (from 1 s in) against idle frames over the same backgrounds (the
    # 50-frame clip ping-pongs every 100): the mouth region changes, the rest hardly at all.
    changes = [c for c in same_background_changes(page, mouth_region(site, avatar), cycle=2 * CLIP_FRAMES)
               if c["into"] >= 25]
    assert changes
    moved = max(changes, key=lambda c: c["inside"])
    assert moved["inside"] > 10 * max(moved["outside"], 0.5), changes
    page.wait_for_function("() => window.musetalk.session.stats.events.includes('speech_ended')",
                           timeout=TIMEOUT_MS)
    s = stats(page)
    # All 3 s of speech came back and were scheduled on the audio clock (up to the last frame's
    # padding), the idle frames' silence too.
    assert s["speechAudioScheduledS"] == pytest.approx(3.0, abs=0.041)
    assert s["audioScheduledS"] > s["speechAudioScheduledS"]
    assert s["latenciesMs"] and page.locator("#fig-latency").inner_text().endswith(" ms")
    assert float(page.locator("#fig-fps").inner_text()) > 0
    assert page.evaluate("() => window.musetalk.audioContext.currentTime") > 3.0
    # The rate went in the socket's URL, not in a config racing frame 0, and ready echoed it.
    assert httpx.URL(page.evaluate("() => window.musetalk.session.ws.url")).params["sample_rate"] == "16000"
    assert page.evaluate("() => window.musetalk.session.ready.sample_rate") == 16000
    assert "config_applied" not in s["events"]
    assert watch.foreign() == [] and watch.errors == []


def test_the_microphone_drives_the_avatar(context, site, avatar, tmp_path):
    page, watch = open_page(context, site)
    select(page, avatar)
    page.click("#mic")
    page.wait_for_function("() => /^\\d+ ms$/.test(document.querySelector('#fig-latency').textContent)",
                           timeout=TIMEOUT_MS)
    page.wait_for_function("() => window.musetalk.session.stats.speakingFramesDrawn > 10", timeout=TIMEOUT_MS)
    s = stats(page)
    assert s["speakingFrames"] > 10 and s["latenciesMs"][0] > 0
    assert page.locator("#mic").inner_text() == "Stop talking"
    assert status(page).startswith("Listening")
    # The fake microphone's loop starts with a pause longer than the gate's 200 ms pre-roll: the
    # latency clock starts at the pre-roll's first sample, a full pre-roll before the gate sent it.
    # (its age when sent: 200 ms, and more when the page's main thread is slow to take the chunks)
    assert 175 <= s["leadInMs"][0] < 500, s["leadInMs"]
    assert s["latenciesMs"][0] > s["leadInMs"][0]
    # Mid-speech: the picture for the README (copied into docs/ when MUSETALK_SCREENSHOT=1).
    shot = tmp_path / "browser-demo.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("MUSETALK_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
    # The microphone off: the page stops saying it listens (the avatar may finish its utterance).
    page.click("#mic")
    assert page.locator("#mic").inner_text() == "Talk (microphone)"
    assert not status(page).startswith("Listening"), status(page)
    page.wait_for_function("() => /^Live, idle/.test(document.querySelector('#live-status').textContent)",
                           timeout=TIMEOUT_MS)
    page.click("#stop")
    assert watch.foreign() == [] and watch.errors == []


def test_interrupt_stops_the_speech_at_once(context, site, avatar, clips):
    page, watch = open_page(context, site)
    select(page, avatar)
    page.set_input_files("#audio-file", str(clips["speech"]))
    page.click("#play-file")
    page.wait_for_function("() => window.musetalk.session?.stats.speakingFrames > 10", timeout=TIMEOUT_MS)
    page.click("#interrupt")
    page.wait_for_function("() => window.musetalk.session.stats.events.includes('speech_ended')",
                           timeout=TIMEOUT_MS)
    spoken = stats(page)["speakingFrames"]
    page.wait_for_function(f"() => window.musetalk.session.stats.framesReceived > {stats(page)['framesReceived'] + 25}",
                           timeout=TIMEOUT_MS)
    # A second of frames later the avatar is still idle: nothing more of the file was sent.
    s = stats(page)
    assert s["speakingFrames"] == spoken and s["speechAudioScheduledS"] < 2.5
    assert status(page) == "Live, idle: 844×844 at 25 fps. Talk or speak a file."
    assert watch.foreign() == [] and watch.errors == []


def test_stop_leaves_the_avatar_idle_on_screen(context, site, avatar, clips):
    page, watch = open_page(context, site)
    select(page, avatar)
    page.set_input_files("#audio-file", str(clips["speech"]))
    page.click("#play-file")
    page.wait_for_function("() => window.musetalk.session?.stats.speakingFramesDrawn > 10", timeout=TIMEOUT_MS)
    assert status(page) == "Speaking speech.wav (3.0 s)…"
    page.click("#stop")  # mid-speech
    page.wait_for_function("() => window.musetalk.lastSession?.closed", timeout=TIMEOUT_MS)
    last = page.evaluate("() => window.musetalk.lastSession.stats")
    # The frame left on screen is idle (mouth shut), painted after the stop, not the open mouth.
    assert last["lastDrawn"]["speaking"] is False and last["speakingFramesDrawn"] > 10
    assert status(page) == "Stopped. Talk or speak a file to go live again."
    assert all(page.locator(b).is_disabled() for b in ("#interrupt", "#stop"))
    canvas_regions(page, (0, 0, 1, 1))
    page.wait_for_timeout(200)
    after = canvas_regions(page, (0, 0, 1, 1))
    assert after["inside"] == after["outside"] == 0  # the closed session paints no more
    assert watch.foreign() == [] and watch.errors == []


def test_download_mp4_through_the_batch_endpoint(context, site, avatar, clips, tmp_path):
    page, _ = open_page(context, site)
    select(page, avatar)
    page.set_input_files("#audio-file", str(clips["speech"]))
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click("#download")
    out = tmp_path / "out.mp4"
    download.value.save_as(out)
    facts = read_mp4(out)
    assert (facts.video_codec, facts.audio_codec, facts.frames, facts.width) == ("h264", "aac", 75, 844)
    assert page.locator("#download-link").inner_text() == f"{avatar}.mp4 (75 frames)"


def test_errors_read_as_sentences(context, site, avatar, clips):
    page, _ = open_page(context, site)
    text = create_through_page(page, clips["fake"], "notes")
    assert text.startswith("The file is not media the server can decode") and "415 unsupported_media" in text
    # Another video under the same id (the same one again would be a retry, answered 200).
    text = create_through_page(page, clips["still"], avatar)
    assert text.startswith("An avatar with this id exists already") and "409 avatar_exists" in text


def test_delete_from_the_page(context, site, clips):
    page, _ = open_page(context, site)
    assert "is ready" in create_through_page(page, clips["still"], "doomed")
    page.click("#avatars li[data-avatar-id=doomed] button.delete")
    page.wait_for_function("() => !document.querySelector('#avatars li[data-avatar-id=doomed]')")
    assert httpx.get(f"{site.url}/avatars/doomed").json()["code"] == "avatar_not_found"


def test_a_session_closed_for_silence_reads_as_a_pause(context, tmp_path, clips):
    """A picked avatar's session idles until someone speaks; the server closes it after its idle
    timeout (4408), which the page says plainly, not as an error, and Talk opens a new one."""
    with LiveServer(make_app(tmp_path / "results", realtime_idle_timeout_s=1.0)) as server, \
            clips["still"].open("rb") as f:
        r = httpx.post(f"{server.url}/avatars/preprocess", data={"avatar_id": "still"},
                       files={"video_file": ("face.png", f)}, timeout=60)
        assert r.status_code == 200, r.text
        page, watch = open_page(context, server)
        select(page, "still")
        page.wait_for_function("() => window.musetalk.stopped", timeout=TIMEOUT_MS)
        assert status(page) == "The session closed after a long silence: talk or speak a file to go live again."
        assert "error" not in page.locator("#live-status").get_attribute("class")
        page.click("#mic")
        page.wait_for_function("() => window.musetalk.session?.stats.framesDrawn > 0", timeout=TIMEOUT_MS)
        assert status(page).startswith("Listening")
        page.click("#stop")
        assert watch.foreign() == [] and watch.errors == []
