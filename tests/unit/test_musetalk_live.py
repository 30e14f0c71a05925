"""The musetalk engine's live session on tiny random models: streamed whisper features against batch.

Given the whole utterance (a burst, then `end`) the session encodes it as the batch path does,
so its tokens are the batch tokens exactly. In real time each frame sees the audio up to its
look-ahead and zeros after, which whisper's full attention notices: the bounds below are the
measured gap on these models (random weights exaggerate it; trained weights attend locally)
with a margin, so a change that breaks the rolling window fails them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import media
from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
from musetalk_server.engines.musetalk import MuseTalkEngine
from musetalk_server.engines.musetalk.live import MuseTalkSession
from musetalk_server.face.landmarks import detect_video
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE, pingpong_index
from testkit.mediatools import first_frames

FPS = 25.0
N_FRAMES = 3
N_OUT = 12  # frames of speech (0.48 s): enough for frames that see only part of the utterance
# Real time vs batch, measured on these models: token windows within 0.4 % (relative L2), frames
# within 0.01 grey levels. The bounds leave 5x room for other BLAS builds, no more.
TOKEN_REL_ERR_BOUND = 0.02
PIXEL_ERR_BOUND = 0.5


@pytest.fixture(scope="module")
def setup(musetalk_dir, tmp_path_factory):
    frames = first_frames(media("seed_short_test_video.mp4"), N_FRAMES)
    points, _found = detect_video(frames)
    engine = MuseTalkEngine(model_dir=musetalk_dir, device="cpu", batch_size=4)
    folder = tmp_path_factory.mktemp("mt-live")
    info = engine.prepare(AvatarFrames(frames, points, FPS), 0, folder / "engine")
    avatar = LoadedAvatar("a", folder, {"fps": FPS, "engine": "musetalk", "engine_info": info}, frames, points,
                         folder / "engine")
    audio = decode_audio(media("vr_audio1.wav"))[:int(N_OUT / FPS * SAMPLE_RATE)]
    renderer = engine.open(avatar)
    with torch.inference_mode():
        batch_tokens = engine.windows(audio, FPS)(range(N_OUT))  # (N_OUT, 50, 384)
    batch_frames = list(renderer.render(audio, FPS))
    return engine, renderer, audio, batch_tokens, batch_frames


def test_a_complete_utterance_streams_the_batch_tokens_and_frames(setup):
    _, renderer, audio, batch_tokens, batch_frames = setup
    session = renderer.session(FPS)
    assert isinstance(session, MuseTalkSession)
    feats = session_features(session)
    with torch.inference_mode():
        tokens = torch.cat([feats.tokens(i, FPS, audio, True) for i in range(N_OUT)])
    assert torch.equal(tokens, batch_tokens) and feats.encodes == 1
    live = [session.speech_frame(1, i, pingpong_index(i, N_FRAMES), audio, True) for i in range(N_OUT)]
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(live, batch_frames, strict=True)) < 0.5


def test_real_time_features_stay_within_the_measured_bound(setup):
    _engine, renderer, audio, batch_tokens, batch_frames = setup
    session = renderer.session(FPS)
    feats = session_features(session)
    errors, pixels = [], []
    for i in range(N_OUT):
        # What frame i sees live: its own audio and the look-ahead, not a sample more.
        n = min(len(audio), math.ceil(((i + 1) / FPS + session.lookahead_s) * SAMPLE_RATE))
        final = n == len(audio)
        with torch.inference_mode():
            t = feats.tokens(i, FPS, audio[:n], final)[0]
        errors.append(float((t - batch_tokens[i]).norm() / batch_tokens[i].norm()))
        frame = session.speech_frame(1, i, pingpong_index(i, N_FRAMES), audio[:n], final)
        pixels.append(np.abs(frame.astype(int) - batch_frames[i].astype(int)).mean())
    print(f"token rel. error max {max(errors):.3f} median {np.median(errors):.3f}; "
          f"pixel error max {max(pixels):.2f} median {np.median(pixels):.2f}")
    assert abs(session.lookahead_s - 0.2) < 1e-9  # 80 ms window edge + 120 ms extra, past the frame's end
    assert max(errors) < TOKEN_REL_ERR_BOUND and max(pixels) < PIXEL_ERR_BOUND
    assert errors[-1] < 1e-6, "the last frames, with the utterance complete, are the batch ones"


def test_idle_frames_are_the_same_each_time(setup):
    _, renderer, *_ = setup
    a, b = renderer.session(FPS), renderer.session(FPS)
    assert all(np.array_equal(a.idle_frame(k), b.idle_frame(k)) for k in range(N_FRAMES))


def session_features(session):
    """The session's feature state for utterance 1, as speech_frame creates it."""
    from musetalk_server.engines.musetalk.live import _Features

    return _Features(session.engine, session.extra)
