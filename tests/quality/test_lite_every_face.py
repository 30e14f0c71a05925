"""Every face the lite engine accepts speaks (issue 26): a photo (png and jpg), a clip whose mouth
stays shut and the seed's one-second clip, whose lips barely part, each driven by speech and
then silence, through the engine itself; and two photos taken mid-word, whose mouth never shuts.

The first four hold no open mouth, so the engine makes openings by dropping the jaw
(synth.open_lips); the photos open mid-word are warped shut and part-way (synth.close_lips), and
the one open wide by raising the jaw (synth.raise_jaw). What is judged is
what a viewer sees: the mouth opening read back from the rendered frames with FaceMesh, against
the audio's envelope (bench/lipsync_eval.py's measures), shut in the silence, and nothing
changed outside the lower face.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from helpers import REPO, media
from musetalk_server.engines.lite.bank import SHUT_LIMIT
from musetalk_server.engines.lite.geometry import mouth_aperture
from musetalk_server.face.landmarks import detect_video
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE, pingpong_index
from musetalk_server.media.video import read_video
from testkit.mediatools import first_frames, write_still

FPS = 25.0
SPEECH_S, SILENCE_S = 3.0, 2.0
R_ENV = 0.5  # issue 26's bar for these faces
CLOSED_IN_SILENCE = 0.95
PSNR_OUTSIDE_DB = 35.0
NEARLY_SHUT = 0.02  # inter-ocular units: the stills' lips before the engine opens them
OPENS_TO = 0.05  # inter-ocular units the read-back mouth reaches in speech (the talking clips: 0.13-0.31)


def _load_eval():
    spec = importlib.util.spec_from_file_location("lipsync_eval", REPO / "bench" / "lipsync_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lipsync_eval"] = module
    spec.loader.exec_module(module)
    return module


def still(tmp, clip: str, frame: int, ext: str, shut: bool = True) -> list[np.ndarray]:
    """One frame of `clip` (its mouth nearly shut, or else wide open) written as an image and
    read back as preprocess reads it."""
    path = tmp / f"{clip}_{frame}.{ext}"
    write_still(media(f"{clip}.mp4"), path, frame)
    frames = list(read_video(path, FPS).frames)
    aperture = mouth_aperture(detect_video(frames)[0])[0]
    assert len(frames) == 1 and (aperture < NEARLY_SHUT if shut else aperture > SHUT_LIMIT), aperture
    return frames


@pytest.fixture(scope="module")
def driven(tmp_path_factory):
    """{case: (engine_info, read-back apertures, envelope dB, silent frames, PSNR outside the lower face)}."""
    le = _load_eval()
    from musetalk_server.engines.lite import LiteEngine

    tmp = tmp_path_factory.mktemp("every_face")
    speech = decode_audio(media("vr_audio1.wav"))[: int(SPEECH_S * SAMPLE_RATE)]
    audio = np.r_[speech, np.zeros(int(SILENCE_S * SAMPLE_RATE), np.float32)].astype(np.float32)
    cases = {
        "still_png": still(tmp, "lp_d11", 34, "png"),  # a child, lips closed (aperture 0.002)
        "still_jpg": still(tmp, "vr_face2", 93, "jpg"),  # a news reader, lips closed (0.001)
        # a real clip whose mouth stays shut: 90 % of its frames under 0.02
        "closed_clip": first_frames(media("mt_yongen.mp4"), int(2 * FPS)),
        "seed_short": list(read_video(media("seed_short_test_video.mp4"), FPS).frames),  # lips part by 0.025 at most
        # a photo taken mid-word, open in its only frame, so nothing filmed is near shut
        "open_still": still(tmp, "vr_face2", 0, "png", shut=False),
        # ... and one open wide (0.36 inter-ocular units, tongue and teeth showing): its jaw rises
        "agape_still": still(tmp, "lp_d12", 165, "jpg", shut=False),
    }
    engine, out = LiteEngine(), {}
    for name, frames in cases.items():
        avatar = le.build_avatar(engine, frames, tmp, name)
        rendered, _, _ = le.render_all(engine, avatar, audio)
        aperture = np.nan_to_num(le.aperture_of(detect_video(rendered)[0]), nan=0.0)
        env_db = le.envelope(audio, len(rendered))
        sq_err, count = 0.0, 0
        for i, frame in enumerate(rendered):
            b = pingpong_index(i, len(frames))
            keep = ~le.lower_face_mask(avatar.landmarks[b], frame.shape[:2])
            sq_err += float(np.sum((frame[keep].astype(np.float64) - frames[b][keep]) ** 2))
            count += int(keep.sum()) * 3
        psnr = 99.0 if sq_err == 0 else 10 * np.log10(255.0**2 * count / sq_err)
        le.draw_strip(rendered, np.nan_to_num(detect_video(rendered)[0]), env_db, aperture,
                      tmp / f"strip_{name}.png", count=16, start=int(SPEECH_S * FPS) - 12)
        out[name] = (avatar.manifest["engine_info"], aperture, env_db, le.silent_mask(env_db), psnr)
    return out, le


NEVER_OPEN = ("still_png", "still_jpg", "closed_clip", "seed_short")
CASES = (*NEVER_OPEN, "open_still", "agape_still")


@pytest.mark.parametrize("case", NEVER_OPEN)
def test_the_avatar_says_its_openings_are_made(driven, case):
    info = driven[0][case][0]["animation"]
    assert info["status"] == "synthesised" and info["open"] == "synthesised", info
    assert "never opens" in info["reason"], info


def test_a_photo_open_mid_word_says_its_shut_mouths_are_made(driven):
    info = driven[0]["open_still"][0]["animation"]
    assert info["status"] == "synthesised" and info["shut"] == "synthesised" and info["open"] == "filmed", info
    assert "open in every frame" in info["reason"], info


def test_a_photo_open_wide_says_its_shut_mouths_are_made(driven):
    info = driven[0]["agape_still"][0]["animation"]
    assert info["status"] == "synthesised" and info["shut"] == "synthesised", info


def test_a_photo_whose_lips_do_not_meet_when_shut_says_it_is_limited(tmp_path):
    """lp_d12's frame 120 (open 0.35, the tongue over the lower teeth): warped shut and pasted
    back, the landmarker still reads its lips apart (0.23), and the avatar says so."""
    le = _load_eval()
    from musetalk_server.engines.lite import LiteEngine

    avatar = le.build_avatar(LiteEngine(), still(tmp_path, "lp_d12", 120, "jpg", shut=False), tmp_path, "agape")
    info = avatar.manifest["engine_info"]["animation"]
    assert info["status"] == "limited" and info["shut"] == "missing", info
    assert "still read" in info["reason"] and "pauses" in info["reason"], info


@pytest.mark.parametrize("case", CASES)
def test_the_mouth_follows_the_speech_and_opens(driven, case):
    (_, aperture, env_db, silent, _), le = driven[0][case], driven[1]
    r_env, lag = le.lagged_r(aperture, env_db)
    assert r_env >= R_ENV and -1 <= lag <= 2, (r_env, lag)
    speaking = ~silent
    assert aperture[speaking].max() >= OPENS_TO, aperture[speaking].max()
    # It varies with the syllables, not just open-then-shut: r within the speech alone.
    n = int(SPEECH_S * FPS)
    assert np.std(aperture[:n][speaking[:n]]) > 0.01, aperture[:n]


@pytest.mark.parametrize("case", CASES)
def test_silence_shuts_the_mouth(driven, case):
    _, aperture, _, silent, _ = driven[0][case]
    assert silent.sum() >= SILENCE_S * FPS - 5
    assert (aperture[silent] < driven[1].CLOSED_APERTURE).mean() >= CLOSED_IN_SILENCE, aperture[silent]


@pytest.mark.parametrize("case", CASES)
def test_nothing_changes_outside_the_lower_face(driven, case):
    assert driven[0][case][4] >= PSNR_OUTSIDE_DB


def test_a_photo_speaks_live_too(tmp_path):
    """A live session (live.py) on the png still: fed the speech as it arrives, its mouths open
    and vary with the syllables, and idle it shows the photo's shut lips."""
    import math

    le = _load_eval()
    from musetalk_server.engines.lite import LiteEngine

    engine = LiteEngine()
    renderer = engine.open(le.build_avatar(engine, still(tmp_path, "lp_d11", 34, "png"), tmp_path, "live"))
    session = renderer.session(FPS)
    speech = decode_audio(media("vr_audio1.wav"))[: int(SPEECH_S * SAMPLE_RATE)]
    hop, ahead = int(SAMPLE_RATE / FPS), math.ceil(session.lookahead_s * SAMPLE_RATE)
    shown = []
    for i in range(int(SPEECH_S * FPS)):
        heard = speech[: (i + 1) * hop + ahead]  # only the audio that has arrived
        shown.append(session.speech_frame(0, i, 0, heard, final=len(heard) == len(speech)))
    aperture = np.nan_to_num(le.aperture_of(detect_video(shown)[0]), nan=0.0)
    assert aperture.max() >= OPENS_TO and aperture.std() > 0.01, aperture
    idle = detect_video([session.idle_frame(0)])[0]
    assert le.aperture_of(idle)[0] < le.CLOSED_APERTURE
