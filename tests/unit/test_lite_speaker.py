"""The lite engine's speaker model: learned at preprocess from the avatar video's own soundtrack.

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
from musetalk_server.engines.lite.audio_features import N_MELS
from musetalk_server.engines.lite.bank import MouthBank, build_bank
from musetalk_server.engines.lite.engine import SPEAKER_FILE, learn_speaker
from musetalk_server.engines.lite.shape import CHUNK, ShapeStream
from musetalk_server.engines.lite.speaker import (
    MIN_GAIN,
    MIN_OWN_R,
    NOT_THEIR_VOICE,
    SpeakerFeatures,
    SpeakerModel,
)
from musetalk_server.face.landmarks import detect_video
from musetalk_server.media.audio import decode_audio, soundtrack
from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count
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
    return engine, avatar, info["speaker_model"]


def test_soundtrack_is_the_videos_audio_or_none():
    assert soundtrack(media("mt_yongen.mp4"), 10.0) is None  # no audio track
    audio = soundtrack(media("vr_face2.mp4"), 2.0)
    assert audio.dtype == np.float32 and len(audio) == 2 * SAMPLE_RATE
    assert np.sqrt(np.mean(audio**2)) > 0.01, "his speech, not silence"


def taught(talking):
    """A mouth that follows what the generic mapping ignores: the level of the 2.5-6 kHz mel
    bands (fricatives, not vowels), smoothed, on the child's own soundtrack. A model that can be
    learned at all must learn it; on the shared clips' real mouths none of the eight half-clip
    avatars earns one (docs/lite-engine.md)."""
    _, points, audio = talking
    bank = build_bank(points)
    n = len(bank)
    highs = SpeakerFeatures(audio, FPS).frames(0, n)[:, 2 * N_MELS - 5:2 * N_MELS].mean(axis=1)
    lo, hi = np.percentile(bank.aperture, [5, 95])
    mouth = lo + (hi - lo) * (highs - highs.min()) / (np.ptp(highs) + 1e-9)
    mouth = np.convolve(mouth, np.ones(3) / 3, "same").astype(np.float32)
    # The engine's own path (learn_speaker), on a bank whose filmed apertures are that mouth.
    filmed = MouthBank(aperture=mouth, width=bank.width, pose=bank.pose)
    generic = np.array([s.openness for s in ShapeStream(audio, FPS, n, filmed.shape_range())], np.float32)
    model, facts = learn_speaker(AvatarFrames([None] * n, points, FPS, audio), filmed, generic)
    return model, facts, filmed.shape_range()


def test_a_mouth_the_generic_mapping_misses_is_learned(talking, tmp_path):
    model, facts, _ = taught(talking)
    assert facts["used"] is True, facts
    assert facts["heldout_r_blend"] >= facts["heldout_r_generic"] + MIN_GAIN, facts
    assert facts["av_offset_frames"] == 0, facts  # the synthetic mouth has no offset
    model.save(tmp_path / SPEAKER_FILE)
    again = SpeakerModel.load(tmp_path / SPEAKER_FILE)
    assert again is not None and np.array_equal(again.weights, model.weights) and again.blend == model.blend


def test_the_engine_stores_only_a_model_that_earns_it(tmp_path, talking):
    """lp_d11's real mouth: the generic mapping is not beaten by 0.05 on held-out frames, so no
    file is stored and the generic mapping serves, and the manifest says why with the numbers."""
    frames, points, audio = talking
    engine, avatar, facts = prepare(tmp_path, frames, points, audio)
    assert facts["used"] is False and "heldout_r_generic" in facts, facts
    assert facts["heldout_r_blend"] < facts["heldout_r_generic"] + MIN_GAIN, facts
    assert not (avatar.engine_dir / SPEAKER_FILE).exists()
    renderer = engine.open(avatar)
    assert renderer.speaker is None
    drive = audio[: 2 * SAMPLE_RATE]
    assert len(list(renderer.render(drive, FPS))) == frame_count(len(drive), FPS)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [(None, "the video has no soundtrack"), ("silence", "too little speech (0 frames)")],
)
def test_no_soundtrack_or_silence_leaves_the_generic_mapping(tmp_path, talking, audio, reason):
    frames, points, own = talking
    if audio == "silence":
        audio = np.zeros_like(own)
    engine, avatar, facts = prepare(tmp_path, frames[:40], points[:40], audio)
    assert facts == {"used": False, "reason": reason}
    assert not (avatar.engine_dir / SPEAKER_FILE).exists()
    assert engine.open(avatar).speaker is None


def test_a_voice_over_teaches_nothing(tmp_path, talking):
    """lp_d11's frames with someone else's speech as their soundtrack (a radio presenter, looped to
    the clip's length). Fitted to it, a speaker model beats the generic mapping's near-zero r on
    held-out frames by far more than MIN_GAIN: noise that would drive every render. The generic
    mapping does not follow her mouth from that voice, so nothing is learned from it: no speaker
    model, and the spread by share, each saying why."""
    frames, points, own = talking
    voice = np.resize(decode_audio(media("st_RD_Radio31_000.wav")), len(own)).astype(np.float32)
    _, avatar, facts = prepare(tmp_path, frames, points, voice)
    assert facts["heldout_r_generic"] < MIN_OWN_R, facts
    assert facts["heldout_r_blend"] >= facts["heldout_r_generic"] + MIN_GAIN, facts  # what the gate stops
    assert facts["used"] is False and facts["reason"] == NOT_THEIR_VOICE, facts
    assert not (avatar.engine_dir / SPEAKER_FILE).exists()
    spread = avatar.manifest["engine_info"]["openness_spread"]
    assert spread["spread"] == "share" and spread["reason"] == NOT_THEIR_VOICE, spread
    # Her own soundtrack is her voice: it passes the same gate.
    assert prepare(tmp_path, frames, points, own)[2]["heldout_r_generic"] >= MIN_OWN_R


def test_a_still_renders_without_a_soundtrack(tmp_path, talking):
    frames, points, _ = talking
    engine, avatar, facts = prepare(tmp_path, frames[:1], points[:1], None)
    assert facts["used"] is False
    out = list(engine.open(avatar).render(np.zeros(SAMPLE_RATE, np.float32), FPS))
    assert len(out) == 25


def test_features_in_chunks_equal_features_of_the_whole(talking):
    """A stream computes features a chunk at a time; each frame must read as in one pass."""
    _, _, audio = talking
    feats = SpeakerFeatures(audio, FPS)
    whole = feats.frames(0, 100)
    parts = np.concatenate([feats.frames(i, min(i + CHUNK, 100)) for i in range(0, 100, CHUNK)])
    assert np.allclose(whole, parts, atol=1e-5)


def test_learned_mapping_moves_the_shapes_but_pauses_stay_shut(talking):
    _, _, audio = talking
    model, _, shape_range = taught(talking)
    n = frame_count(len(audio), FPS)
    generic = np.array([s.openness for s in ShapeStream(audio, FPS, n, shape_range)])
    learned = np.array([s.openness for s in ShapeStream(audio, FPS, n, shape_range, model)])
    assert ((generic == 0) == (learned == 0)).all(), "the pauses are the generic mapping's, kept as they are"
    assert np.abs(generic - learned).max() > 0.1


def test_a_model_for_other_features_is_ignored(tmp_path):
    path = tmp_path / "speaker.npz"
    np.savez(path, weights=np.zeros(3, np.float32), bias=np.float32(0), blend=np.float32(1),
             context=np.array([1, 1, 1]))
    assert SpeakerModel.load(path) is None


def test_the_videos_own_av_offset_is_measured_and_not_learned(tmp_path, talking):
    """A picture that trails its sound (here: the soundtrack delayed 3 frames, 120 ms) must not
    teach the mapping to trail it too: the offset is found first and the mouth paired with the
    sound that goes with it, so the facts report it moved by exactly the delay."""
    frames, points, audio = talking
    _, _, facts = prepare(tmp_path / "as-filmed", frames, points, audio)
    delay = 3 * SAMPLE_RATE // int(FPS)
    late = np.concatenate([np.zeros(delay, np.float32), audio])[: len(audio)]
    _, _, shifted = prepare(tmp_path / "delayed", frames, points, late)
    assert shifted["av_offset_frames"] == facts["av_offset_frames"] - 3, (facts, shifted)
