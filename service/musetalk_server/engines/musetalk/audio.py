"""MuseTalk's audio tokens: whisper-tiny encoder states, cut into one window per video frame.

Upstream (`AudioProcessor.get_audio_feature` / `get_whisper_chunk`, spec §2):
1. 16 kHz mono, cut into 30 s segments; each is zero-padded to 30 s by the feature extractor
   and encoded on its own (bidirectional attention sees the padding, so this is kept exactly).
2. All 5 encoder hidden states per 20 ms step: (1500, 5, 384) per segment.
3. Concatenate, keep the first A = floor(seconds x 50) steps, zero-pad 2 video-frame periods on
   the left and plenty on the right.
4. Frame i takes 10 steps starting at floor(i x 50 / fps) in padded coordinates (whisper steps
   2i-4 ... 2i+5 at 25 fps), flattened time-major to (50, 384), plus a sinusoidal PE.

Segments are independent, so `SegmentedWindows` encodes them only when a frame's window first
reaches into them: the first frames need only the first segment, whatever the audio's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...media.frame_timing import SAMPLE_RATE

__all__ = [
    "SAMPLE_RATE",
    "HOP_LENGTH",
    "ENCODER_STRIDE",
    "WHISPER_FPS",
    "SAMPLES_PER_FEATURE",
    "SEGMENT_SECONDS",
    "SEGMENT_SAMPLES",
    "SEGMENT_FEATURES",
    "HIDDEN_STATES",
    "PAD_PERIODS",
    "WINDOW",
    "LEFT_PAD",
    "TOKENS",
    "feature_count",
    "left_pad",
    "window_indices",
    "encode_segment",
    "whisper_hidden",
    "audio_windows",
    "positional_encoding",
    "SegmentedWindows",
]

HOP_LENGTH = 160  # samples per log-mel column (10 ms)
ENCODER_STRIDE = 2  # whisper's conv2 halves the mel rate
WHISPER_FPS = SAMPLE_RATE // HOP_LENGTH // ENCODER_STRIDE  # 50 encoder steps per second
SAMPLES_PER_FEATURE = HOP_LENGTH * ENCODER_STRIDE  # 320
SEGMENT_SECONDS = 30  # whisper's fixed input window
SEGMENT_SAMPLES = SEGMENT_SECONDS * SAMPLE_RATE  # 480,000
SEGMENT_FEATURES = SEGMENT_SAMPLES // SAMPLES_PER_FEATURE  # 1500
HIDDEN_STATES = 5  # embeddings, layers 1-3, final-LayerNorm'd layer 4
PAD_PERIODS = 2  # upstream's audio_padding_length_left = _right = 2 (video-frame periods)
WINDOW = 2 * (PAD_PERIODS + PAD_PERIODS + 1)  # 10 encoder steps = 200 ms per frame
LEFT_PAD = 4  # left_pad(25): the zero steps before the first window at the training fps
TOKENS = WINDOW * HIDDEN_STATES  # 50 cross-attention tokens per frame
PE_BASE = 10_000.0  # the Transformer sinusoid's wavelength base
_EPS = 1e-9  # keeps exact products (2.0 x 25) from flooring one too low


def feature_count(n_samples: int) -> int:
    """A = floor(seconds x 50): encoder steps that hold real audio."""
    return n_samples // SAMPLES_PER_FEATURE


def left_pad(fps: float) -> int:
    """Zero steps before step 0: ceil(50 / fps) steps per video frame, times 2 periods."""
    return math.ceil(WHISPER_FPS / fps - _EPS) * PAD_PERIODS


def window_indices(frames: Sequence[int] | np.ndarray, fps: float) -> np.ndarray:
    """(B, WINDOW) unpadded encoder-step indices of each frame's window; < 0 or >= A mean zeros.

    Quirk §9.7: upstream truncates fps with int() here (29.97 -> 29) while the video runs at the
    float rate, so long 29.97 fps outputs drift off the audio. We index with the float fps the
    service's timeline uses; at integer rates (25, the training rate) this is upstream exactly.
    """
    frames = np.asarray(frames, dtype=np.int64)
    start = np.floor(frames * (WHISPER_FPS / fps) + _EPS).astype(np.int64) - left_pad(fps)
    return start[:, None] + np.arange(WINDOW, dtype=np.int64)[None, :]


def encode_segment(samples: np.ndarray, extractor, encoder, device: str, dtype: torch.dtype) -> torch.Tensor:
    """Up to 30 s of audio -> (1500, 5, 384) hidden states, on `device` in `dtype`."""
    feats = extractor(np.asarray(samples, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    mel = feats.input_features.to(device=device, dtype=dtype)  # (1, 80, 3000), zero-padded to 30 s
    out = encoder(mel, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=2)[0]  # (1500, 5, 384)


def whisper_hidden(audio: np.ndarray, extractor, encoder, device: str, dtype: torch.dtype) -> torch.Tensor:
    """Every segment, encoded up front and trimmed: (A, 5, 384). The reference for the lazy path."""
    n = max(1, math.ceil(len(audio) / SEGMENT_SAMPLES))
    parts = [encode_segment(audio[s * SEGMENT_SAMPLES:(s + 1) * SEGMENT_SAMPLES], extractor, encoder, device, dtype)
             for s in range(n)]
    return torch.cat(parts, dim=0)[: feature_count(len(audio))]


def _gather(idx: np.ndarray, n_features: int, lookup: Callable[[int], torch.Tensor],
            like: torch.Tensor) -> torch.Tensor:
    """(B, W) indices -> (B, W * 5, 384): real steps from `lookup(segment)`, zeros elsewhere."""
    out = torch.zeros((*idx.shape, *like.shape[-2:]), dtype=like.dtype, device=like.device)  # (B, W, 5, 384)
    valid = (idx >= 0) & (idx < n_features)
    for seg in np.unique(idx[valid] // SEGMENT_FEATURES):
        sel = valid & (idx // SEGMENT_FEATURES == seg)
        rows = torch.as_tensor(idx[sel] - seg * SEGMENT_FEATURES, device=like.device)
        out[torch.as_tensor(sel, device=like.device)] = lookup(int(seg))[rows]
    return out.flatten(1, 2)  # (B, 50, 384): token = window step x 5 + layer, time-major


def audio_windows(hidden: torch.Tensor, n_frames: int, fps: float) -> torch.Tensor:
    """(A, 5, 384) -> (T, 50, 384) for frames 0..n_frames-1, zero-padded at both ends."""
    idx = window_indices(np.arange(n_frames), fps)
    segments = hidden.split(SEGMENT_FEATURES)
    return _gather(idx, hidden.shape[0], lambda s: segments[s], hidden)


def positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """The Transformer sinusoid table (n, d): PE[p, 2k] = sin(p / 10000^(2k/d)), PE[p, 2k+1] = cos."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(PE_BASE) / d_model))
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class SegmentedWindows:
    """Per-frame audio windows over 30 s segments encoded on first use.

    Frames are asked for in increasing order, so segments left behind are dropped: memory stays
    at one or two segments (1500 x 5 x 384 values: 11.5 MB each in fp32, 5.8 MB in fp16),
    whatever the audio's length.
    """

    def __init__(self, audio: np.ndarray, fps: float, encode: Callable[[np.ndarray], torch.Tensor],
                 *, device: str, dtype: torch.dtype, width: int) -> None:
        self.audio, self.fps, self._encode = audio, fps, encode
        self.n_features = feature_count(len(audio))
        self._cache: dict[int, torch.Tensor] = {}
        self._zeros = torch.zeros((1, HIDDEN_STATES, width), dtype=dtype, device=device)
        self.encoded: list[int] = []  # segment numbers, in the order they were encoded

    def __call__(self, frames: Sequence[int]) -> torch.Tensor:
        """(B, 50, 384) tokens for these frame numbers (no PE yet)."""
        idx = window_indices(frames, self.fps)
        first = max(0, int(idx.min())) // SEGMENT_FEATURES
        for seg in [s for s in self._cache if s < first]:
            del self._cache[seg]
        return _gather(idx, self.n_features, self._segment, self._zeros)

    def _segment(self, seg: int) -> torch.Tensor:
        if seg not in self._cache:
            self._cache[seg] = self._encode(self.audio[seg * SEGMENT_SAMPLES:(seg + 1) * SEGMENT_SAMPLES])
            self.encoded.append(seg)
        return self._cache[seg]
