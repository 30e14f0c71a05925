"""The musetalk engine on CUDA in fp16: upstream's full-size shapes, the tiny dir's load path.

Skipped without CUDA (tests/conftest.py). Random weights: these check shapes, dtypes, memory
and that frames come out, not what they look like.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import media
from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
from musetalk_server.engines.musetalk.engine import MuseTalkEngine
from musetalk_server.engines.musetalk.models import MuseTalkModels
from musetalk_server.media.frame_timing import SAMPLE_RATE

pytestmark = pytest.mark.gpu
DEVICE = "cuda:0"


@pytest.fixture(scope="module")
def clip():
    # The GPU machine has no PyAV or MediaPipe: there the frames and landmarks come decoded
    # from bench/gpu_inputs.py (MUSETALK_GPU_INPUTS); elsewhere they are made here.
    inputs = os.environ.get("MUSETALK_GPU_INPUTS")
    if inputs:
        saved = np.load(Path(inputs) / "avatar.npz")
        return AvatarFrames(list(saved["frames"][:4]), saved["points"][:4], 25.0)
    from musetalk_server.face.landmarks import detect_video
    from testkit.mediatools import first_frames

    frames = first_frames(media("vr_face2.mp4"), 4)
    points, found = detect_video(frames)
    assert found.all()
    return AvatarFrames(frames, points, 25.0)


@pytest.fixture(scope="module")
def full_engine():
    from transformers import WhisperFeatureExtractor

    from testkit.musetalk_tiny import build_models

    unet, vae, whisper = build_models("full")
    move = lambda m: torch.nn.Module.to(m, device=DEVICE, dtype=torch.float16).eval()  # noqa: E731
    models = MuseTalkModels(unet=move(unet), vae=move(vae), extractor=WhisperFeatureExtractor(feature_size=80),
                            whisper=move(whisper.model.encoder), version="v1.5", device=DEVICE, dtype=torch.float16)
    return MuseTalkEngine(models=models, batch_size=8)


def test_tiny_dir_loads_on_cuda_in_fp16(musetalk_dir):
    engine = MuseTalkEngine(model_dir=musetalk_dir, device=DEVICE, batch_size=4)
    described = engine.describe()
    assert described["device"] == DEVICE and described["dtype"] == "float16"
    assert next(engine.models.unet.parameters()).dtype == torch.float16
    assert next(engine.models.whisper.parameters()).device.type == "cuda"


def test_full_size_batch_shapes_and_memory(full_engine):
    torch.cuda.reset_peak_memory_stats(DEVICE)
    tokens = torch.randn(8, 50, 384, device=DEVICE, dtype=torch.float16)
    latents = torch.randn(8, 8, 32, 32, device=DEVICE, dtype=torch.float16)
    faces = full_engine.faces(tokens, latents)
    assert faces.shape == (8, 256, 256, 3) and faces.dtype == np.uint8
    assert torch.cuda.max_memory_allocated(DEVICE) < 8 * 2**30  # fp16 models (~2 GB) + one batch


def test_full_size_prepare_and_stream(full_engine, clip, tmp_path):
    info = full_engine.prepare(clip, 0, tmp_path / "engine")
    assert info["version"] == "v1.5"
    latents = np.load(tmp_path / "engine" / "latents.npy")
    assert latents.shape == (4, 8, 32, 32) and np.isfinite(latents).all()
    avatar = LoadedAvatar("gpu", tmp_path, {"fps": 25.0}, list(clip.frames), clip.landmarks, tmp_path / "engine")
    renderer = full_engine.open(avatar)
    assert renderer.latents.device.type == "cuda" and renderer.latents.dtype == torch.float16
    frames = list(renderer.render(np.zeros(SAMPLE_RATE, np.float32), 25.0))
    assert len(frames) == 25 and frames[0].shape == clip.frames[0].shape
