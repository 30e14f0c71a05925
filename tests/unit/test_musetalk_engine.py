"""The musetalk engine without HTTP: artifacts, incremental streaming, cancel, versions, mask kinds."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import media
from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
from musetalk_server.engines.musetalk import MuseTalkEngine
from musetalk_server.engines.musetalk import engine as E
from musetalk_server.engines.musetalk.crop import crop_face, face_box
from musetalk_server.engines.musetalk.models import decode_faces, encode_latents
from musetalk_server.errors import AvatarEngineMismatch, InvalidInput, NoFaceDetected
from musetalk_server.face.landmarks import detect_video, to_ibug68
from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count
from testkit.mediatools import first_frames
from testkit.musetalk_tiny import write_bisenet, write_model_dir

N_FRAMES = 3


@pytest.fixture(scope="module")
def clip():
    frames = first_frames(media("seed_short_test_video.mp4"), N_FRAMES)
    points, found = detect_video(frames)
    assert found.all()
    return AvatarFrames(frames, points, 25.0)


@pytest.fixture(scope="module")
def engine(musetalk_dir):
    return MuseTalkEngine(model_dir=musetalk_dir, device="cpu", batch_size=4)


def make_avatar(engine, clip, folder: Path, avatar_id: str = "a") -> LoadedAvatar:
    info = engine.prepare(clip, 0, folder / "engine")
    manifest = {"fps": clip.fps, "engine": engine.name, "engine_info": info}
    return LoadedAvatar(avatar_id, folder, manifest, list(clip.frames), clip.landmarks, folder / "engine")


def test_prepare_caches_stamped_deterministic_artifacts(engine, clip, tmp_path):
    a = make_avatar(engine, clip, tmp_path / "a")
    b = make_avatar(engine, clip, tmp_path / "b")
    folder = a.engine_dir
    stamp = json.loads((folder / E.STAMP_FILE).read_text())
    assert stamp == {"engine": "musetalk", "artifact_version": E.ARTIFACT_VERSION, "version": "v1.5",
                     "blend_mask": "landmarks", "frames": N_FRAMES, "extra_margin": 10, "bbox_shift": 0}
    latents, boxes = np.load(folder / E.LATENTS_FILE), np.load(folder / E.BOXES_FILE)
    assert latents.shape == (N_FRAMES, 8, 32, 32) and latents.dtype == np.float32
    assert np.array_equal(latents, np.load(b.engine_dir / E.LATENTS_FILE))  # posterior mean: no noise
    lm68 = to_ibug68(clip.landmarks)
    h, w = clip.frames[0].shape[:2]
    assert tuple(boxes[0]) == face_box(lm68[0], 0, (h, w), extra_margin=10, points478=clip.landmarks[0])


def test_crop_latents_decode_shapes(engine, clip):
    lm68 = to_ibug68(clip.landmarks)
    crops = np.stack([crop_face(f, face_box(lm68[i], 0, f.shape[:2])) for i, f in enumerate(clip.frames)])
    assert crops.shape == (N_FRAMES, 256, 256, 3) and crops.dtype == np.uint8
    with torch.inference_mode():
        lat = encode_latents(engine.models.vae, crops, "cpu", torch.float32)
        faces = decode_faces(engine.models.vae, lat[:, 4:])
    assert lat.shape == (N_FRAMES, 8, 32, 32) and faces.shape == (N_FRAMES, 256, 256, 3)


def test_first_frame_needs_only_the_first_segment_and_cancel_stops(engine, clip, tmp_path, monkeypatch):
    renderer = engine.open(make_avatar(engine, clip, tmp_path / "a"))
    encoded = []
    real = E.encode_segment

    def counting(samples, *args):
        encoded.append(len(samples))
        return real(samples, *args)

    monkeypatch.setattr(E, "encode_segment", counting)
    audio = np.random.default_rng(0).standard_normal(65 * SAMPLE_RATE).astype(np.float32) * 0.05  # 3 segments
    cancel = threading.Event()
    frames = renderer.render(audio, 25.0, cancel)
    first = next(frames)
    assert first.shape == clip.frames[0].shape and len(encoded) == 1  # 30 s encoded, not 65
    for _ in range(engine.batch_size):  # into the second batch: still one segment
        next(frames)
    assert len(encoded) == 1
    cancel.set()
    assert list(frames) == []


def test_frame_count_follows_float_fps(engine, clip, tmp_path):
    renderer = engine.open(make_avatar(engine, clip, tmp_path / "a"))
    audio = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    assert len(list(renderer.render(audio, 29.97))) == frame_count(audio.size, 29.97) == 11
    with pytest.raises(InvalidInput):
        next(renderer.render(audio, 0))


def test_open_refuses_other_artifacts(engine, clip, tmp_path):
    avatar = make_avatar(engine, clip, tmp_path / "a")
    stamp_path = avatar.engine_dir / E.STAMP_FILE
    stamp = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps({**stamp, "version": "v1.0"}))
    with pytest.raises(AvatarEngineMismatch, match="v1.0.*v1.5"):
        engine.open(avatar)
    stamp_path.unlink()
    (avatar.engine_dir / "lite.json").write_text("{}")
    with pytest.raises(AvatarEngineMismatch, match="no musetalk engine artifacts"):
        engine.open(avatar)


def test_bisenet_masks_when_its_weights_are_there(musetalk_dir, clip, tmp_path):
    models = Path(shutil.copytree(musetalk_dir, tmp_path / "models"))
    write_bisenet(models)
    engine = MuseTalkEngine(model_dir=models, device="cpu", batch_size=4)
    assert engine.describe()["blend_mask"] == "bisenet"
    two = AvatarFrames(clip.frames[:2], clip.landmarks[:2], clip.fps)
    avatar = make_avatar(engine, two, tmp_path / "a")
    assert avatar.manifest["engine_info"]["blend_mask"] == "bisenet"
    frames = list(engine.open(avatar).render(np.zeros(SAMPLE_RATE // 5, np.float32), 25.0))
    assert len(frames) == 5


def test_v10_weights_mean_no_margin(tmp_path, clip):
    v10 = MuseTalkEngine(model_dir=write_model_dir(tmp_path / "v10", version="v1.0"), device="cpu")
    described = v10.describe()
    assert described["version"] == "v1.0" and described["dtype"] == "float32"
    info = v10.prepare(AvatarFrames(clip.frames[:1], clip.landmarks[:1], clip.fps), 0, tmp_path / "a" / "engine")
    assert info["version"] == "v1.0" and info["extra_margin"] == 0


def test_render_is_the_spec_pipeline_frame_by_frame(engine, clip, tmp_path):
    """Reference: all segments encoded up front, windows + PE, one UNet pass per frame at t = 0,
    decode, BGR, paste into the ping-pong frame with the cached box, square and mask."""
    from musetalk_server.engines.musetalk import audio as A
    from musetalk_server.engines.musetalk import blend
    from musetalk_server.engines.musetalk.models import generate
    from musetalk_server.media.audio import decode_audio
    from musetalk_server.media.frame_timing import pingpong_index

    avatar = make_avatar(engine, clip, tmp_path / "a")
    renderer = engine.open(avatar)
    speech = decode_audio(media("vr_audio1.wav"))[: SAMPLE_RATE // 2]
    got = list(renderer.render(speech, 25.0))
    m = engine.models
    latents = torch.from_numpy(np.load(avatar.engine_dir / E.LATENTS_FILE))
    boxes, squares = np.load(avatar.engine_dir / E.BOXES_FILE), np.load(avatar.engine_dir / E.SQUARES_FILE)
    with np.load(avatar.engine_dir / E.MASKS_FILE) as z:
        masks = [z[k] for k in sorted(z.files)]
    with torch.inference_mode():
        hidden = A.whisper_hidden(speech, m.extractor, m.whisper, "cpu", torch.float32)
        tokens = A.audio_windows(hidden, len(got), 25.0) + A.positional_encoding(50, 384)
        for i, out in enumerate(got):
            k = pingpong_index(i, N_FRAMES)
            face = generate(m.unet, m.vae, latents[k:k + 1], tokens[i:i + 1])[0].numpy()[..., ::-1]
            want = blend.paste_face(clip.frames[k], np.ascontiguousarray(face), tuple(boxes[k]), tuple(squares[k]),
                                    masks[k])
            diff = np.abs(out.astype(int) - want)
            assert diff.max() <= 1 and diff.mean() < 0.01, f"frame {i}"  # batch-of-4 vs batch-of-1 rounding
    assert len(got) == 12


def test_prepare_checks_its_inputs(engine, clip, tmp_path):
    with pytest.raises(InvalidInput, match="one \\(478, 2\\) landmark set per frame"):
        engine.prepare(AvatarFrames(clip.frames, clip.landmarks[:1], clip.fps), 0, tmp_path / "engine")
    with pytest.raises(InvalidInput):
        engine.prepare(AvatarFrames(clip.frames, clip.landmarks[:, :, 0], clip.fps), 0, tmp_path / "engine")
    nowhere = clip.landmarks.copy()
    nowhere[1] = np.nan  # a frame whose face was never found and never filled in
    with pytest.raises(NoFaceDetected, match="^frame 1: "):
        engine.prepare(AvatarFrames(clip.frames, nowhere, clip.fps), 0, tmp_path / "engine")
    assert not (tmp_path / "engine" / "musetalk.json").exists()


def test_streams_take_turns_on_the_device(engine, monkeypatch):
    import time

    inside, most = [0], [0]

    def slow_generate(unet, vae, latents, tokens):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        inside[0] -= 1
        return torch.zeros((latents.shape[0], 256, 256, 3), dtype=torch.uint8)

    monkeypatch.setattr(E, "generate", slow_generate)
    tokens, latents = torch.zeros(2, 50, 384), torch.zeros(2, 8, 32, 32)
    threads = [threading.Thread(target=engine.faces, args=(tokens, latents)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1  # one batch's activations on the device, however many streams
