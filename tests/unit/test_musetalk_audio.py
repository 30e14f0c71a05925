"""MuseTalk audio tokens: windows, padding, segment boundaries, lazy encoding, PE (spec §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musetalk_server.engines.musetalk import audio as A
from musetalk_server.engines.musetalk.weights import detect_layout, load_whisper


def numbered_hidden(n: int) -> torch.Tensor:
    """(n, 5, 384) where step j, layer l holds j * 10 + l + 1 everywhere: 0 only in padding."""
    j = torch.arange(n, dtype=torch.float32)[:, None, None]
    layer = torch.arange(A.HIDDEN_STATES, dtype=torch.float32)[None, :, None]
    return (j * 10 + layer + 1).expand(n, A.HIDDEN_STATES, 384).clone()


def step_of(tokens: torch.Tensor) -> np.ndarray:
    """(T, 50, 384) from numbered_hidden -> (T, 10) step numbers (-1 for zero padding)."""
    v = tokens[:, ::A.HIDDEN_STATES, 0].numpy()  # layer 0 of each window step
    return np.where(v == 0, -1, (v - 1) // 10).astype(int)


def test_constants_derive_from_each_other():
    assert (A.WHISPER_FPS, A.SAMPLES_PER_FEATURE, A.SEGMENT_FEATURES) == (50, 320, 1500)
    assert (A.WINDOW, A.TOKENS, A.LEFT_PAD, A.left_pad(25)) == (10, 50, 4, 4)
    from musetalk_server.engines.musetalk import weights as W

    assert (W.WHISPER_HIDDEN_STATES, W.WHISPER_POSITIONS) == (A.HIDDEN_STATES, A.SEGMENT_FEATURES)


def test_windows_at_25_fps_are_2i_minus_4_to_2i_plus_5():
    idx = A.window_indices(range(100), 25.0)
    for i in (0, 1, 2, 7, 99):
        assert idx[i].tolist() == list(range(2 * i - 4, 2 * i + 6))


def test_zero_padding_at_both_ends_and_time_major_layout():
    n_samples = 4 * A.SAMPLE_RATE  # 4 s: A = 200 steps, T = 100 frames
    hidden = numbered_hidden(A.feature_count(n_samples))
    tokens = A.audio_windows(hidden, 100, 25.0)
    assert tokens.shape == (100, 50, 384)
    steps = step_of(tokens)
    assert steps[0].tolist() == [-1] * 4 + [0, 1, 2, 3, 4, 5]
    assert steps[99].tolist() == list(range(194, 200)) + [-1] * 4
    # token = window step x 5 + layer: the five layers of one step sit together
    assert tokens[10, 7 * 5:8 * 5, 0].tolist() == [(2 * 10 - 4 + 7) * 10 + layer + 1 for layer in range(5)]


def test_windows_follow_float_fps():
    idx = A.window_indices([0, 1, 2, 3, 30], 29.97)
    starts = [math.floor(i * 50 / 29.97) - 4 for i in (0, 1, 2, 3, 30)]
    assert idx[:, 0].tolist() == starts
    assert A.left_pad(12.5) == 8  # ceil(50 / fps) steps per video frame, two periods


def test_frames_straddling_the_30_s_boundary_take_both_segments():
    n_samples = 31 * A.SAMPLE_RATE
    hidden = numbered_hidden(A.feature_count(n_samples))
    tokens = A.audio_windows(hidden, 775, 25.0)
    steps = step_of(tokens)
    assert steps[748].tolist() == list(range(1492, 1502))  # 1492..1499 | 1500, 1501
    assert steps[774].tolist() == list(range(1544, 1550)) + [-1] * 4


def test_lazy_segments_match_up_front_and_start_with_one_segment():
    n_samples = 31 * A.SAMPLE_RATE
    audio = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32) * 0.1
    calls: list[int] = []

    def encode(samples: np.ndarray) -> torch.Tensor:  # a stand-in encoder: depends on the samples
        calls.append(len(samples))
        base = float(np.abs(samples).sum())
        steps = torch.arange(A.SEGMENT_FEATURES, dtype=torch.float32)[:, None, None]
        return torch.full((A.SEGMENT_FEATURES, A.HIDDEN_STATES, 384), base) + steps

    both = [encode(audio[:A.SEGMENT_SAMPLES]), encode(audio[A.SEGMENT_SAMPLES:])]
    full = torch.cat(both)[: A.feature_count(n_samples)]
    calls.clear()
    lazy = A.SegmentedWindows(audio, 25.0, encode, device="cpu", dtype=torch.float32, width=384)
    first = lazy(range(0, 8))
    assert lazy.encoded == [0] and calls == [A.SEGMENT_SAMPLES]  # first frames: one segment only
    got = torch.cat([first] + [lazy(range(s, min(s + 8, 775))) for s in range(8, 775, 8)])
    assert lazy.encoded == [0, 1]
    assert torch.equal(got, A.audio_windows(full, 775, 25.0))


@pytest.fixture(scope="module")
def tiny_whisper(musetalk_dir):
    return load_whisper(detect_layout(musetalk_dir))


def test_real_encoder_lazy_equals_up_front(tiny_whisper):
    extractor, encoder = tiny_whisper
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(int(30.5 * A.SAMPLE_RATE)) * 0.05).astype(np.float32)
    with torch.inference_mode():
        hidden = A.whisper_hidden(audio, extractor, encoder, "cpu", torch.float32)
        assert hidden.shape == (A.feature_count(len(audio)), 5, 384)
        lazy = A.SegmentedWindows(audio, 25.0, lambda s: A.encode_segment(s, extractor, encoder, "cpu", torch.float32),
                                  device="cpu", dtype=torch.float32, width=384)
        n = 762
        got = torch.cat([lazy(range(s, min(s + 32, n))) for s in range(0, n, 32)])
        assert torch.allclose(got, A.audio_windows(hidden, n, 25.0), atol=1e-5)


def test_the_five_states_are_embeddings_to_final_layernorm(tiny_whisper):
    extractor, encoder = tiny_whisper
    audio = np.zeros(A.SAMPLE_RATE, dtype=np.float32)
    with torch.inference_mode():
        mel = extractor(audio, sampling_rate=A.SAMPLE_RATE, return_tensors="pt").input_features
        out = encoder(mel, output_hidden_states=True)
        hidden = A.encode_segment(audio, extractor, encoder, "cpu", torch.float32)
    assert mel.shape == (1, 80, 3000) and hidden.shape == (1500, 5, 384)
    assert torch.allclose(hidden[:, 4], out.last_hidden_state[0])  # the LayerNorm'd last layer
    assert torch.allclose(hidden[:, 0], out.hidden_states[0][0])  # conv + positions, before layer 1


def test_positional_encoding_values():
    pe = A.positional_encoding(50, 384)
    assert pe.shape == (50, 384)
    assert torch.equal(pe[0, 0::2], torch.zeros(192)) and torch.equal(pe[0, 1::2], torch.ones(192))
    for p, k in ((1, 0), (7, 5), (49, 191)):
        angle = p / 10000 ** (2 * k / 384)
        assert pe[p, 2 * k].item() == pytest.approx(math.sin(angle), abs=1e-5)
        assert pe[p, 2 * k + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
