"""Per-video-frame acoustic features, computed in small chunks so a stream can start at once.

Each output frame gets one short spectrum centred on the frame's own midpoint: a sound leaves the
mouth while the mouth has the shape that makes it. (A spectrum 20 ms later, "the mouth moves
before its sound", bought no anticipation, since a frame whose own sound is a pause stays shut
anyway; it closed every mouth early and cost a second spectrum per frame and 20 ms of a live
session's look-ahead: docs/lite-engine.md, "What generalises".) From that spectrum come three
numbers:

- `loudness`: dB of the 300-3000 Hz band, where the vowels and voiced consonants carry their energy;
- `centroid`: the power-weighted mean frequency of 200-3000 Hz. Open vowels (/a/) put the first
  formant near 700 Hz and most of their energy around it; closed and rounded ones (/u/, /o/) sit
  near 300 Hz and nasals (/m/, /n/, lips or tongue shut) lower still, so it tracks jaw opening.
  Measured on the ground-truth clips it predicts the filmed aperture better than the share of
  200-1000 Hz energy above 450 Hz that an earlier version used;
- `f2_share`: how much of the 600-3000 Hz energy lies above 1500 Hz. Spread vowels (/i/, /e/)
  have a high second formant, rounded ones (/u/, /o/) a low one, so it tracks lip width;
- `mel`: the spectrum's shape in MEL_BANDS bands of equal width in pitch (the mel scale, 100-8000
  Hz), in dB, which `learned_opening.py` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...media.frame_timing import SAMPLE_RATE

__all__ = ["WINDOW", "MEL_BANDS", "FrameFeatures", "frame_features", "power_spectra", "mel_filters"]

WINDOW = 1024  # samples: 64 ms, long enough to resolve a 300 Hz first formant
_BIN_HZ = SAMPLE_RATE / WINDOW  # 15.6 Hz per FFT bin
_EPS = 1e-10

# Frequency bands as FFT bin ranges [lo, hi).
_LOUD_BAND = (int(300 / _BIN_HZ), int(3000 / _BIN_HZ))
_CENTROID_BAND = (int(200 / _BIN_HZ), int(3000 / _BIN_HZ))
_CENTROID_HZ = np.arange(*_CENTROID_BAND, dtype=np.float32) * _BIN_HZ
_F2_BAND = (int(600 / _BIN_HZ), int(3000 / _BIN_HZ))
_F2_SPLIT = int(1500 / _BIN_HZ)

MEL_BANDS = 16
MEL_HZ = (100.0, 8000.0)

_HANN = np.hanning(WINDOW).astype(np.float32)
# Window energy normalisation, so that loudness reads in dB relative to a full-scale sine.
_DB_REF = float(np.sum(_HANN) ** 2 / 4)


@dataclass(frozen=True)
class FrameFeatures:
    """Features for a run of frames, each an (n,) float32 array (`mel`: (n, MEL_BANDS))."""

    loudness: np.ndarray  # dB re full scale
    centroid: np.ndarray  # Hz, within 200-3000
    f2_share: np.ndarray  # [0, 1]
    mel: np.ndarray  # (n, MEL_BANDS) dB re full scale

    def since(self, k: int) -> FrameFeatures:
        """The same features from the k-th frame on."""
        return FrameFeatures(self.loudness[k:], self.centroid[k:], self.f2_share[k:], self.mel[k:])


def frame_features(audio: np.ndarray, fps: float, start: int, stop: int) -> FrameFeatures:
    """Features for output frames [start, stop) of `audio` (16 kHz mono float32).

    Cost is proportional to stop - start only; audio outside the window reads as silence.
    """
    mid_s = (np.arange(start, stop) + 0.5) / fps
    power = power_spectra(audio, mid_s)  # (n, WINDOW/2+1)
    loud = power[:, slice(*_LOUD_BAND)].sum(axis=1)
    voiced = power[:, slice(*_CENTROID_BAND)]
    centroid = (voiced @ _CENTROID_HZ) / (voiced.sum(axis=1) + _EPS)
    f2_all = power[:, slice(*_F2_BAND)].sum(axis=1)
    f2_high = power[:, _F2_SPLIT:_F2_BAND[1]].sum(axis=1)
    return FrameFeatures(
        loudness=_db(loud),
        centroid=centroid.astype(np.float32),
        f2_share=(f2_high / (f2_all + _EPS)).astype(np.float32),
        mel=_db(power @ _MEL.T),
    )


def power_spectra(audio: np.ndarray, centres_s: np.ndarray) -> np.ndarray:
    """(n, WINDOW/2+1) Hann-windowed power spectra centred at `centres_s` seconds; zeros outside."""
    centres = np.round(centres_s * SAMPLE_RATE).astype(np.int64)
    # (n, WINDOW) sample indices, then a zero-padded gather.
    pos = centres[:, None] + np.arange(-WINDOW // 2, WINDOW // 2)[None, :]
    valid = (pos >= 0) & (pos < len(audio))
    seg = np.where(valid, audio[np.clip(pos, 0, max(len(audio) - 1, 0))] if len(audio) else 0.0, 0.0)
    return np.abs(np.fft.rfft(seg.astype(np.float32) * _HANN, axis=1)) ** 2


def mel_filters(bands: int = MEL_BANDS, lo_hz: float = MEL_HZ[0], hi_hz: float = MEL_HZ[1]) -> np.ndarray:
    """(bands, WINDOW/2+1) triangular filters, equally spaced in mel and overlapping by half, each
    summing the power of its band (a flat spectrum gives each band its width in bins)."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(mel(np.array(lo_hz)), mel(np.array(hi_hz)), bands + 2)
    edges_hz = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins_hz = np.arange(WINDOW // 2 + 1) * _BIN_HZ
    lo, centre, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lo) / (centre - lo)
    falling = (hi - bins_hz) / (hi - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


_MEL = mel_filters()


def _db(power: np.ndarray) -> np.ndarray:
    return (10 * np.log10(power / _DB_REF + _EPS)).astype(np.float32)
