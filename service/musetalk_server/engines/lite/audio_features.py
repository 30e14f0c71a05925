"""Per-video-frame acoustic features, computed in small chunks so a stream can start at once.

Each output frame gets one short spectrum centred slightly *after* the frame's own instant: the
mouth moves before the sound it makes, so a frame shows the shape of the sound about to come.
From that spectrum come three numbers:

- `loudness`: dB of the 300-3000 Hz band, where the vowels and voiced consonants carry their energy;
- `f1_share`: how much of the 200-1000 Hz energy lies above 450 Hz. Open vowels (/a/) put the
  first formant near 700 Hz, closed ones (/i/, /u/) near 300 Hz, so it tracks jaw opening;
- `f2_share`: how much of the 600-3000 Hz energy lies above 1500 Hz. Spread vowels (/i/, /e/)
  have a high second formant, rounded ones (/u/, /o/) a low one, so it tracks lip width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...media.timeline import SAMPLE_RATE

__all__ = ["WINDOW", "LEAD_S", "FrameFeatures", "frame_features"]

WINDOW = 1024  # samples: 64 ms, long enough to resolve a 300 Hz first formant
LEAD_S = 0.02  # the analysis centre sits this far after the frame's midpoint
_BIN_HZ = SAMPLE_RATE / WINDOW  # 15.6 Hz per FFT bin
_EPS = 1e-10

# Frequency bands as FFT bin ranges [lo, hi).
_LOUD_BAND = (int(300 / _BIN_HZ), int(3000 / _BIN_HZ))
_F1_BAND = (int(200 / _BIN_HZ), int(1000 / _BIN_HZ))
_F1_SPLIT = int(450 / _BIN_HZ)
_F2_BAND = (int(600 / _BIN_HZ), int(3000 / _BIN_HZ))
_F2_SPLIT = int(1500 / _BIN_HZ)

_HANN = np.hanning(WINDOW).astype(np.float32)
# Window energy normalisation, so that loudness reads in dB relative to a full-scale sine.
_DB_REF = float(np.sum(_HANN) ** 2 / 4)


@dataclass(frozen=True)
class FrameFeatures:
    """Features for a run of frames, each an (n,) float32 array."""

    loudness: np.ndarray  # dB re full scale
    f1_share: np.ndarray  # [0, 1]
    f2_share: np.ndarray  # [0, 1]


def frame_features(audio: np.ndarray, fps: float, start: int, stop: int) -> FrameFeatures:
    """Features for output frames [start, stop) of `audio` (16 kHz mono float32).

    Cost is proportional to stop - start only; audio outside the window reads as silence.
    """
    idx = np.arange(start, stop)
    centres = np.round(((idx + 0.5) / fps + LEAD_S) * SAMPLE_RATE).astype(np.int64)
    # (n, WINDOW) sample indices, then a zero-padded gather.
    pos = centres[:, None] + np.arange(-WINDOW // 2, WINDOW // 2)[None, :]
    valid = (pos >= 0) & (pos < len(audio))
    seg = np.where(valid, audio[np.clip(pos, 0, max(len(audio) - 1, 0))] if len(audio) else 0.0, 0.0)
    power = np.abs(np.fft.rfft(seg.astype(np.float32) * _HANN, axis=1)) ** 2  # (n, WINDOW/2+1)
    loud = power[:, slice(*_LOUD_BAND)].sum(axis=1)
    f1_all = power[:, slice(*_F1_BAND)].sum(axis=1)
    f1_high = power[:, _F1_SPLIT:_F1_BAND[1]].sum(axis=1)
    f2_all = power[:, slice(*_F2_BAND)].sum(axis=1)
    f2_high = power[:, _F2_SPLIT:_F2_BAND[1]].sum(axis=1)
    return FrameFeatures(
        loudness=(10 * np.log10(loud / _DB_REF + _EPS)).astype(np.float32),
        f1_share=(f1_high / (f1_all + _EPS)).astype(np.float32),
        f2_share=(f2_high / (f2_all + _EPS)).astype(np.float32),
    )
