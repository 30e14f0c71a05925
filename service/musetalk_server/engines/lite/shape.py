"""Audio features -> target mouth shape (aperture, width), frame by frame, in a stream.

Shapes are in inter-ocular units, like the mouth bank's, so a target can be looked up directly.
The level of the speech is unknown up front; it is read from the first seconds (a bounded cost,
so the first frame does not wait on long audio) and then follows the speech as it goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .audio_features import FrameFeatures, frame_features

__all__ = ["ShapeRange", "MouthShape", "ShapeStream", "openness"]

PRIME_S = 10.0  # seconds read before the first frame to learn the speech level (bounded cost: ~3 ms)
LEVEL_PERCENTILE = 95.0  # the speech level is this percentile of frame loudness
RANGE_DB = 24.0  # from the level down this many dB the mouth goes from open to closed
SILENCE_DB = 30.0  # below level - SILENCE_DB a frame is silence: mouth shut
MIN_LEVEL_DB = -50.0  # a level below this is noise, not speech (keeps a silent start silent)
VOWEL_WEIGHT = 0.35  # how much the first-formant position modulates the opening
WIDTH_GAIN = 0.8  # share of the bank's width range spanned by the second formant
PAUSE_CLOSE = 0.3  # a silent frame keeps only this share of its neighbours' opening
CHUNK = 8  # frames of features computed per step
# Coarticulation: each target blends with its neighbours; two frames of look-ahead.
SMOOTH_KERNEL = np.array([0.1, 0.2, 0.4, 0.2, 0.1], dtype=np.float32)
LOOKAHEAD = len(SMOOTH_KERNEL) // 2


@dataclass(frozen=True)
class ShapeRange:
    """The shapes a bank can show, in inter-ocular units."""

    closed: float  # aperture of a shut mouth
    open: float  # the widest opening to ask for
    width_lo: float
    width_hi: float


@dataclass(frozen=True)
class MouthShape:
    aperture: float
    width: float
    openness: float  # [0, 1], 0 = silence


def openness(feat: FrameFeatures, level_db: float) -> np.ndarray:
    """(n,) loudness-and-vowel driven opening in [0, 1]; exactly 0 in silence."""
    rel = (feat.loudness - (level_db - RANGE_DB)) / RANGE_DB
    loud = np.clip(rel, 0.0, 1.0)
    vowel = np.clip((feat.f1_share - 0.2) / 0.6, 0.0, 1.0)
    out = loud * ((1 - VOWEL_WEIGHT) + VOWEL_WEIGHT * vowel)
    out[feat.loudness < level_db - SILENCE_DB] = 0.0
    return out.astype(np.float32)


class LoudnessLevel:
    """Running percentile of frame loudness, from a histogram: O(1) per frame at any length."""

    LO_DB, HI_DB, STEP_DB = -120.0, 20.0, 0.5

    def __init__(self) -> None:
        self.counts = np.zeros(int((self.HI_DB - self.LO_DB) / self.STEP_DB) + 1, np.int64)

    def add(self, loudness: np.ndarray) -> None:
        bins = np.clip(((loudness - self.LO_DB) / self.STEP_DB).astype(int), 0, len(self.counts) - 1)
        np.add.at(self.counts, bins, 1)

    def level(self) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return MIN_LEVEL_DB
        k = int(np.searchsorted(np.cumsum(self.counts), total * LEVEL_PERCENTILE / 100.0))
        return max(self.LO_DB + k * self.STEP_DB, MIN_LEVEL_DB)


class ShapeStream:
    """Yields one `MouthShape` per output frame, computing features a chunk at a time."""

    def __init__(self, audio: np.ndarray, fps: float, n_frames: int, shapes: ShapeRange) -> None:
        self.audio, self.fps, self.n_frames, self.range = audio, fps, n_frames, shapes
        self._level = LoudnessLevel()
        self._seen = min(n_frames, int(PRIME_S * fps))
        self._level.add(frame_features(audio, fps, 0, self._seen).loudness)

    def _raw(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        feat = frame_features(self.audio, self.fps, start, stop)
        if stop > self._seen:  # frames past the priming window join the level estimate
            self._level.add(feat.loudness[max(self._seen - start, 0):])
            self._seen = stop
        opened = openness(feat, self._level.level())
        spread = np.clip((feat.f2_share - 0.05) / 0.5, 0.0, 1.0) - 0.5
        return opened, (spread * opened).astype(np.float32)

    def __iter__(self) -> Iterator[MouthShape]:
        r = self.range
        width_mid, width_span = (r.width_lo + r.width_hi) / 2, (r.width_hi - r.width_lo) * WIDTH_GAIN
        # Rolling buffer of raw targets for frames [base, base + len(buf)).
        base, done = -LOOKAHEAD, 0
        open_buf = np.zeros(LOOKAHEAD, np.float32)  # silence before the start
        spread_buf = np.zeros(LOOKAHEAD, np.float32)
        computed = 0
        while done < self.n_frames:
            need = min(done + LOOKAHEAD + 1, self.n_frames)
            if computed < need:
                stop = min(max(need, computed + CHUNK), self.n_frames)
                o, s = self._raw(computed, stop)
                open_buf, spread_buf = np.concatenate([open_buf, o]), np.concatenate([spread_buf, s])
                computed = stop
            # Pad past the end with silence so the last frames still have look-ahead.
            i = done - base
            window = _take(open_buf, i - LOOKAHEAD, len(SMOOTH_KERNEL))
            swindow = _take(spread_buf, i - LOOKAHEAD, len(SMOOTH_KERNEL))
            o = float(window @ SMOOTH_KERNEL)
            # A frame that is itself silent stays shut: smoothing must not leak opening into pauses.
            if open_buf[i] == 0.0:
                o *= PAUSE_CLOSE
            yield MouthShape(
                aperture=r.closed + (r.open - r.closed) * o,
                width=width_mid + width_span * float(swindow @ SMOOTH_KERNEL),
                openness=o,
            )
            done += 1
            # Drop what no later frame needs.
            if i > 2 * LOOKAHEAD + CHUNK:
                cut = i - LOOKAHEAD
                open_buf, spread_buf, base = open_buf[cut:], spread_buf[cut:], base + cut


def _take(buf: np.ndarray, start: int, n: int) -> np.ndarray:
    """buf[start:start+n], reading zeros (silence) outside it."""
    out = np.zeros(n, np.float32)
    lo, hi = max(start, 0), min(start + n, len(buf))
    if hi > lo:
        out[lo - start:hi - start] = buf[lo:hi]
    return out
