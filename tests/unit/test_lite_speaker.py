"""The lite engine's speaker model: learned at preprocess from the avatar video's own soundtrack.

Real media: vr_face2 (a news reader, his own speech) is the talking clip; the anime portrait
(mt_yongen.mp4) has no audio track.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import media
from musetalk_server.avatars.layout import ENGINE_DIR
from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
from musetalk_server.engines.lite import LiteEngine
from musetalk_server.engines.lite.engine import SPEAKER_FILE
from musetalk_server.engines.lite.shape import CHUNK, ShapeStream
from musetalk_server.engines.lite.speaker import MIN_GAIN, SpeakerFeatures, SpeakerModel
from musetalk_server.face.landmarks import detect_video
from musetalk_server.media.audio import soundtrack
from musetalk_server.media.timeline import SAMPLE_RATE, frame_count
from musetalk_server.media.video import read_video

FPS = 25.0


@pytest.fixture(scope="module")
def talking():
    """vr_face2 on the 25 fps clock: frames, landmarks and its own soundtrack."""
    clip = read_video(media("vr_face2.mp4"), FPS)
    points, found = detect_video(clip.frames)
    assert found.all()
    audio = soundtrack(media("vr_face2.mp4"), len(clip.frames) / FPS)
    return list(clip.frames), points, audio


def prepare(tmp_path, frames, points, audio):
    path = tmp_path / "avatar"
    engine = LiteEngine()
    info = engine.prepare(AvatarFrames(frames, points, FPS, audio), 0, path / ENGINE_DIR)
    avatar = LoadedAvatar("a", path, {"fps": FPS, "engine_info": info}, frames, points)
    return engine, avatar, info["speaker_model"]


def test_soundtrack_is_the_videos_audio_or_none():
    assert soundtrack(media("mt_yongen.mp4"), 10.0) is None  # no audio track
    audio = soundtrack(media("vr_face2.mp4"), 2.0)
    assert audio.dtype == np.float32 and len(audio) == 2 * SAMPLE_RATE
    assert np.sqrt(np.mean(audio**2)) > 0.01, "his speech, not silence"


def test_a_talking_clip_teaches_the_engine_its_speaker(tmp_path, talking):
    frames, points, audio = talking
    engine, avatar, facts = prepare(tmp_path, frames, points, audio)
    assert facts["used"] is True, facts
    assert facts["heldout_r_blend"] >= facts["heldout_r_generic"] + MIN_GAIN, facts
    assert (avatar.engine_dir / SPEAKER_FILE).is_file()
    renderer = engine.open(avatar)
    assert renderer.speaker is not None
    drive = audio[: 2 * SAMPLE_RATE]
    out = list(renderer.render(drive, FPS))
    assert len(out) == frame_count(len(drive), FPS)


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


def test_learned_mapping_moves_the_shapes_but_pauses_stay_shut(tmp_path, talking):
    frames, points, audio = talking
    engine, avatar, _ = prepare(tmp_path, frames, points, audio)
    renderer = engine.open(avatar)
    n = frame_count(len(audio), FPS)
    generic = np.array([s.openness for s in ShapeStream(audio, FPS, n, renderer.shape_range)])
    learned = np.array([s.openness for s in ShapeStream(audio, FPS, n, renderer.shape_range, renderer.speaker)])
    assert ((generic == 0) == (learned == 0)).all(), "the pauses are the generic mapping's, kept as they are"
    assert np.abs(generic - learned).max() > 0.1


def test_a_model_for_other_features_is_ignored(tmp_path):
    path = tmp_path / "speaker.npz"
    np.savez(path, weights=np.zeros(3, np.float32), bias=np.float32(0), blend=np.float32(1),
             context=np.array([1, 1, 1]))
    assert SpeakerModel.load(path) is None
