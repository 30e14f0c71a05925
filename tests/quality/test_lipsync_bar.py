"""The lite engine's lip-sync bar on one real ground-truth clip (bench/lipsync_eval.py, issue 5).

lp_d11 (a child talking, 512x512, 9 s): an avatar from the first half, driven by the audio of the
second half, measured against the mouth that was filmed. It is the clip where every bar holds
with margin (docs/lite-engine.md has the full table), so a failure here is a regression, not
noise. The thresholds are the issue's, per clip, not loosened.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from helpers import REPO, media

CLIP = "lp_d11"
MS_PER_FRAME_AT_512 = 1000 / (25 * 10)  # 10x real time at 25 fps: 4 ms per frame


def _load_eval():
    spec = importlib.util.spec_from_file_location("lipsync_eval", REPO / "bench" / "lipsync_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lipsync_eval"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    media(f"{CLIP}.mp4")
    lipsync_eval = _load_eval()
    from musetalk_server.engines.lite import LiteEngine

    work = tmp_path_factory.mktemp("lipsync")
    return lipsync_eval.evaluate_clip(LiteEngine(), CLIP, work / "out", work), lipsync_eval.BARS


def test_mouth_follows_the_speech(result):
    r, bars = result
    lo, hi = bars["lag"]
    assert r.r_env >= bars["r_env"], r
    assert lo <= r.lag <= hi, r


def test_mouth_matches_the_filmed_mouth_better_than_the_envelope_does(result):
    r, bars = result
    assert r.r_gt >= bars["r_gt"], r
    assert r.r_gt > r.env_gt, r


def test_mouth_is_shut_in_silence(result):
    r, bars = result
    assert r.silent_frames > 0 and r.closed_in_silence >= bars["closed_in_silence"], r


def test_nothing_changes_outside_the_lower_face(result):
    r, bars = result
    assert r.psnr_outside >= bars["psnr_outside"], r


def test_renders_at_ten_times_real_time_at_512(result):
    r, _ = result
    assert r.render_ms_per_frame <= MS_PER_FRAME_AT_512, r
