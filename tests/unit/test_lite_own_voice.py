"""What the lite engine reads from an avatar video's own soundtrack: the spread of openness, only
when the soundtrack is the person's own voice, at the file's own A/V offset.

Real media: lp_d11 (a child talking, her own speech, 9 s) is the talking clip; the anime portrait
(mt_yongen.mp4) has no audio track.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import media
from musetalk_server.avatars.layout import ENGINE_DIR
from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
from musetalk_server.engines.lite import LiteEngine
from musetalk_server.engines.lite.own_voice import MIN_OWN_R, NOT_THEIR_VOICE, av_offset, paired
from musetalk_server.face.landmarks import detect_video
from musetalk_server.media.audio import decode_audio, soundtrack
from musetalk_server.media.frame_timing import SAMPLE_RATE
from musetalk_server.media.video import read_video

FPS = 25.0


@pytest.fixture(scope="module")
def talking():
    """lp_d11 on the 25 fps clock: frames, landmarks and its own soundtrack."""
    clip = read_video(media("lp_d11.mp4"), FPS)
    points, found = detect_video(clip.frames)
    assert found.all()
    audio = soundtrack(media("lp_d11.mp4"), len(clip.frames) / FPS, start_s=clip.start_s)
    return list(clip.frames), points, audio


def prepare(tmp_path, frames, points, audio):
    path = tmp_path / "avatar"
    engine = LiteEngine()
    info = engine.prepare(AvatarFrames(frames, points, FPS, audio), 0, path / ENGINE_DIR)
    avatar = LoadedAvatar("a", path, {"fps": FPS, "engine_info": info}, frames, points, path / ENGINE_DIR)
    return engine, avatar, info["openness_spread"]


def test_a_lag_pairs_each_sound_with_the_mouth_that_many_frames_later():
    sound, mouth = np.arange(10), np.arange(100, 108)  # the mouth's frame t is 100 + t
    for lag in range(-4, 5):
        s, m = paired(sound, mouth, lag)
        assert len(s) == len(m) == 8 - abs(lag)
        assert (m - 100 == s + lag).all(), lag
    assert [len(x) for x in paired(sound, mouth, 9)] == [0, 0]
    # A mouth that shows the sound three frames late is found three frames late.
    speech = np.random.default_rng(1).normal(size=60)
    assert av_offset(speech, np.roll(speech, 3)) == 3
    assert av_offset(speech, np.roll(speech, -2)) == -2


def test_soundtrack_is_the_videos_audio_or_none():
    assert soundtrack(media("mt_yongen.mp4"), 10.0) is None  # no audio track
    audio = soundtrack(media("vr_face2.mp4"), 2.0)
    assert audio.dtype == np.float32 and len(audio) == 2 * SAMPLE_RATE
    assert np.sqrt(np.mean(audio**2)) > 0.01, "his speech, not silence"


def test_her_own_voice_is_read_and_a_voice_over_teaches_nothing(tmp_path, talking):
    """lp_d11's frames with someone else's speech as their soundtrack (a radio presenter, looped to
    the clip's length): the mapping does not follow her mouth from that voice, so the spread stays
    by share and the manifest says why. Her own soundtrack passes the same gate."""
    frames, points, own = talking
    voice = np.resize(decode_audio(media("st_RD_Radio31_000.wav")), len(own)).astype(np.float32)
    _, _, spread = prepare(tmp_path / "voice-over", frames, points, voice)
    assert spread["spread"] == "share" and spread["reason"] == NOT_THEIR_VOICE, spread
    assert spread["r_share"] < MIN_OWN_R, spread
    _, _, spread = prepare(tmp_path / "own", frames, points, own)
    assert spread["r_share"] >= MIN_OWN_R and "reason" not in spread, spread


@pytest.mark.parametrize(("audio", "spread"), [(None, {}), ("silence", {"spread": "share",
                                                                        "reason": "too little speech in the soundtrack"})])
def test_no_soundtrack_or_silence_spreads_by_share(tmp_path, talking, audio, spread):
    frames, points, own = talking
    if audio == "silence":
        audio = np.zeros_like(own)
    engine, avatar, facts = prepare(tmp_path, frames[:40], points[:40], audio)
    assert facts == spread
    out = list(engine.open(avatar).render(own[:SAMPLE_RATE], FPS))
    assert len(out) == 25


def test_an_avatar_with_a_speaker_model_from_before_still_opens(tmp_path, talking):
    """Avatars prepared until issue 26 may carry engine/speaker.npz: it is ignored."""
    frames, points, own = talking
    engine, avatar, _ = prepare(tmp_path, frames[:10], points[:10], None)
    np.savez(avatar.engine_dir / "speaker.npz", weights=np.zeros(100, np.float32), bias=np.float32(0),
             blend=np.float32(1), context=np.array([2, 2, 20]))
    assert len(list(engine.open(avatar).render(own[:SAMPLE_RATE], FPS))) == 25


def test_the_videos_own_av_offset_is_measured(tmp_path, talking):
    """A picture that trails its sound (here: the soundtrack delayed 3 frames, 120 ms) is read at
    the file's offset, found first, so the facts report it moved by exactly the delay."""
    frames, points, audio = talking
    _, _, facts = prepare(tmp_path / "as-filmed", frames, points, audio)
    delay = 3 * SAMPLE_RATE // int(FPS)
    late = np.concatenate([np.zeros(delay, np.float32), audio])[: len(audio)]
    _, _, shifted = prepare(tmp_path / "delayed", frames, points, late)
    assert shifted["av_offset_frames"] == facts["av_offset_frames"] - 3, (facts, shifted)
