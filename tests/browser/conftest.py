"""A real Chromium (Debian's, driven by Playwright) against the real service on loopback.

One browser per test session, a fresh context per test. `make test` installs the `chromium`
package when it is missing (see .ci/debian_packages.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from browsing import chromium_path, make_app

from helpers import LiveServer, media
from testkit.mediatools import first_frames, speech_turn_wav, transcode_audio, write_video

CLIP_FRAMES = 50  # 2 s of vr_face2: a real face, quick to preprocess
SPEECH = "vr_audio1.wav"  # English speech; 3 s of it, between pauses, is the fake microphone's input
# The fake microphone's loop: a pause longer than the voice gate's pre-roll, 3 s of speech, then a
# pause longer than the gate's hang time, so each loop is one utterance with a full pre-roll.
MIC_LEAD_S, MIC_SPEECH_S, MIC_TAIL_S = 0.6, 3.0, 1.4
LAUNCH_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    # The microphone: permission granted without a prompt, fed from a speech file (looped).
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator:
    from playwright.sync_api import sync_playwright

    mic = speech_turn_wav(media(SPEECH), tmp_path_factory.mktemp("mic") / "mic.wav",
                          lead_s=MIC_LEAD_S, speech_s=MIC_SPEECH_S, tail_s=MIC_TAIL_S)
    with sync_playwright() as p:
        # Playwright gives each launch a fresh temporary --user-data-dir of its own.
        b = p.chromium.launch(executable_path=chromium_path(), headless=True,
                              args=[*LAUNCH_FLAGS, f"--use-file-for-fake-audio-capture={mic}"])
        yield b
        b.close()


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


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["microphone"])
    yield ctx
    ctx.close()


def pytest_collection_modifyitems(config, items):
    """Run the browser tests last. Playwright's sync API marks an event loop as running in this
    thread for as long as the session's browser lives, which async tests after it would trip on."""
    here = Path(__file__).parent
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(here))
