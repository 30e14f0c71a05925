"""Audio features -> target mouth shape (aperture, width), frame by frame, in a stream.

Shapes are in inter-ocular units, like the mouth bank's, so a target can be looked up directly.
The level of the speech is unknown up front; it is read from the first seconds (a bounded cost,
so the first frame does not wait on long audio) and then follows the speech as it goes. So does
the spread of the speech's voiced openness, over which a voiced frame's openness is scaled (by its
share of a wide opening, or by its rank: chosen per avatar); it then goes through the bank's
aperture quantiles, so the mouth opens as this person opens. A frame whose own
sound is a pause is shut, whatever its neighbours do; over the last FADE_DB above a pause the
mouth closes as the sound dies away.

Beside the hand-written openness, the learned opening (learned_opening.py: the whole spectrum's
shape, mapped to the mouth by a regression fitted across speakers) moves each voiced frame's
aperture a little, by how far its prediction lies from its mean over this voice's voiced frames;
pauses and the openness the spread is read from stay the hand-written ones.

It is one mapping, the same for every face: nothing in it is fitted to the avatar but the
spread's choice and the bank's own quantiles.

Look-ahead: a frame's shape needs the audio up to four frames past its start at 25 fps (the
smoothing's two frames and half the 64 ms window; the peak hold and the learned opening look back
only). Features are
computed CHUNK frames at a time and join the running level before any of them is shown, so as
written a frame waits on up to CHUNK + 4 frames of audio; the levels are primed on the first
seconds of `audio`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .audio_features import FrameFeatures, frame_features
from .learned_opening import CONTEXT, SHIPPED_OPENING, LearnedOpening, RunningMoments

__all__ = ["SHIPPED", "GenericMapping", "ShapeRange", "MouthShape", "ShapeStream", "SpeechLevels", "openness"]

PRIME_S = 10.0  # seconds read before the first frame to learn the speech level (bounded cost: ~3 ms)
LEVEL_PERCENTILE = 95.0  # the speech level is this percentile of frame loudness
RANGE_DB = 40.0  # from the level down this many dB the mouth goes from open to closed (GenericMapping)
SILENCE_DB = 24.0  # a frame whose own sound is this far under the level is a pause: mouth shut
# Lips close as a sound dies away, not at a threshold: over the last FADE_DB above the pause the
# opening fades to nothing. A hard cut at SILENCE_DB made every dip of a phrase that crossed it
# snap shut and read as a step the filmed mouths do not take (docs/lite-engine.md, "What
# generalises": rendered on every split, the unseen speaker's r rose, the pauses stayed shut).
FADE_DB = 12.0
MIN_LEVEL_DB = -50.0  # a level below this is noise, not speech (keeps a silent start silent)
# The spread of voiced openness over the bank's shapes, one of two, chosen per avatar at
# preprocess (engine.speaking_bank):
# - by share: openness over its OPEN_REF_PERCENTILE among this speech's voiced frames (that
#   percentile opens fully);
# - by rank: a voiced frame's rank among them (0..1), through the person's own openings while
#   speaking. A speaker who talks without pauses varies by 10-15 dB, not 40, and by share is
#   asked only for the top of the range (lp_d12: targets 0.129-0.158 of a 0-0.16 range; by rank
#   0.08-0.16).
OPEN_REF_PERCENTILE = 90.0
MIN_OPEN_REF = 0.2  # quiet murmurs: the reference is never under this (they stay small)
MIN_RANK = 0.01  # a voiced frame is never exactly 0, which means a pause
VOWEL_WEIGHT = 0.6  # how much the vowel's spectral centroid modulates the opening (GenericMapping)
CENTROID_HZ = (400.0, 1200.0)  # centroids from closed (/u/, nasals) to open (/a/) sounds
WIDTH_GAIN = 0.8  # share of the bank's width range spanned by the second formant
# The learned opening (learned_opening.py) moves a voiced frame's aperture by this share of the
# spread of the person's openings (ShapeRange.spread) per spread of its own prediction. Leaving
# each speaker out (bench/learned_mapping.py), at 0.25 (a weight fixed before those runs) the
# mean r over 36 splits rose and no speaker's fell by more than 0.002; docs/lite-engine.md has
# the figures, rendered too.
LEARNED_WEIGHT = 0.25
MIN_LEARNED_FRAMES = 25  # voiced frames heard before the learned opening's spread is trusted (1 s)
CHUNK = 8  # frames of features computed per step
# The jaw is slower than the sound: between the syllables of a phrase the level dips for a frame
# or two while the filmed mouth stays open. So each frame first takes the widest opening of
# itself and the GenericMapping.hold frames before it (a peak hold, looking back only, so it
# adds no look-ahead), and only then blends with its neighbours (coarticulation, two frames
# of look-ahead). A frame whose own sound is a pause is still shut. Measured on the ground-truth
# clips both ways (avatar from either half; target against filmed aperture), the hold and the
# 40 dB ramp lifted the mean r from 0.26 to 0.31 and took vr_face1's reversed split from -0.09
# to 0.21 (its envelope: 0.31).
MAX_HOLD = 1
SMOOTH_KERNEL = np.array([1, 2, 3, 2, 1], dtype=np.float32) / 9
LOOKAHEAD = len(SMOOTH_KERNEL) // 2


@dataclass(frozen=True)
class GenericMapping:
    """The generic mapping's settings that were chosen on data (the ground-truth clips); the
    defaults are what ships. bench/lipsync_eval.py chooses them again leave-one-clip-out, so
    that no clip is scored with settings its own frames picked."""

    range_db: float = RANGE_DB
    vowel_weight: float = VOWEL_WEIGHT
    hold: int = MAX_HOLD  # earlier frames the peak hold looks back over, at most MAX_HOLD
    learned_weight: float = LEARNED_WEIGHT
    learned: LearnedOpening = SHIPPED_OPENING


SHIPPED = GenericMapping()


@dataclass(frozen=True)
class ShapeRange:
    """The shapes a bank can show, in inter-ocular units."""

    closed: float  # aperture of a shut mouth
    open: float  # the widest opening to ask for
    width_lo: float
    width_hi: float
    # Apertures for openness 0, 1/(n-1), ..., 1: the bank's own quantiles, so that speech is
    # shown with the spread of openings this person actually makes, not a straight ramp.
    curve: tuple[float, ...] = ()
    by_rank: bool = False  # voiced openness is spread by rank, not by share (see OPEN_REF_PERCENTILE)

    @property
    def spread(self) -> float:
        """How widely this person's openings vary: the standard deviation of the curve (or the ramp)."""
        if not self.curve:
            return (self.open - self.closed) / np.sqrt(12.0)
        return float(np.std(self.curve))

    def aperture(self, openness: float) -> float:
        if not self.curve:
            return self.closed + (self.open - self.closed) * openness
        return float(np.interp(openness, np.linspace(0.0, 1.0, len(self.curve)), self.curve))


@dataclass(frozen=True)
class MouthShape:
    aperture: float
    width: float
    openness: float  # [0, 1], 0 = silence


def openness(feat: FrameFeatures, level_db: float, mapping: GenericMapping = SHIPPED) -> np.ndarray:
    """(n,) loudness-and-vowel driven opening in [0, 1]; exactly 0 in a pause, fading to it."""
    rel = (feat.loudness - (level_db - mapping.range_db)) / mapping.range_db
    loud = np.clip(rel, 0.0, 1.0)
    lo, hi = CENTROID_HZ
    vowel = np.clip((feat.centroid - lo) / (hi - lo), 0.0, 1.0)
    out = loud * ((1 - mapping.vowel_weight) + mapping.vowel_weight * vowel)
    out *= fade(feat.loudness, level_db)
    return out.astype(np.float32)


def fade(loudness: np.ndarray, level_db: float) -> np.ndarray:
    """(n,) 1 above the last FADE_DB over a pause, falling to 0 at it: lips close as a sound dies away."""
    return np.clip((loudness - (level_db - SILENCE_DB)) / FADE_DB, 0.0, 1.0)


class RunningPercentile:
    """Running percentile of a stream of values, from a histogram: O(1) per frame at any length."""

    def __init__(self, lo: float, hi: float, step: float, percentile: float, floor: float) -> None:
        self.lo, self.step, self.percentile, self.floor = lo, step, percentile, floor
        self.counts = np.zeros(int((hi - lo) / step) + 1, np.int64)

    def add(self, values: np.ndarray) -> None:
        bins = np.clip(((values - self.lo) / self.step).astype(int), 0, len(self.counts) - 1)
        np.add.at(self.counts, bins, 1)

    def value(self) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return self.floor
        k = int(np.searchsorted(np.cumsum(self.counts), total * self.percentile / 100.0))
        return max(self.lo + k * self.step, self.floor)

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Share of the values seen that lie below each of `values` (half of its own bin counted)."""
        total = int(self.counts.sum())
        if total == 0:
            return np.zeros(len(values), np.float32)
        bins = np.clip(((values - self.lo) / self.step).astype(int), 0, len(self.counts) - 1)
        below = np.cumsum(self.counts) - self.counts
        return ((below[bins] + 0.5 * self.counts[bins]) / total).astype(np.float32)


# Histogram ranges (lo, hi, step) of the two running percentiles: loudness in dB re full scale,
# openness in [0, 1]. The steps are far finer than any threshold read from them.
LOUDNESS_BINS_DB = (-120.0, 20.0, 0.5)
OPENNESS_BINS = (0.0, 1.0, 0.01)


def loudness_level() -> RunningPercentile:
    """The speech level: LEVEL_PERCENTILE of frame loudness in dB, never below MIN_LEVEL_DB."""
    return RunningPercentile(*LOUDNESS_BINS_DB, LEVEL_PERCENTILE, MIN_LEVEL_DB)


def openness_level() -> RunningPercentile:
    """The voiced openness of this speech so far: ranks, and OPEN_REF_PERCENTILE of it."""
    return RunningPercentile(*OPENNESS_BINS, OPEN_REF_PERCENTILE, 0.0)


@dataclass
class SpeechLevels:
    """What a stream has learned of this voice so far; a live session keeps it across utterances."""

    loudness: RunningPercentile = field(default_factory=loudness_level)
    openness: RunningPercentile = field(default_factory=openness_level)  # of the voiced frames
    learned: RunningMoments = field(default_factory=RunningMoments)  # the learned opening of voiced frames


class ShapeStream:
    """Yields one `MouthShape` per output frame, computing features a chunk at a time."""

    def __init__(self, audio: np.ndarray, fps: float, n_frames: int, shapes: ShapeRange,
                 levels: SpeechLevels | None = None, mapping: GenericMapping = SHIPPED) -> None:
        self.audio, self.fps, self.n_frames, self.range = audio, fps, n_frames, shapes
        self.mapping = mapping
        # Prime the levels on the first seconds, so the first frame is already on scale. A live
        # session (live.py) passes in its own, which already know the voice of earlier utterances.
        self._levels = levels or SpeechLevels()
        self._seen = 0
        self._opened(0, min(n_frames, int(PRIME_S * fps)))

    def grow(self, audio: np.ndarray, n_frames: int) -> None:
        """A live utterance's audio so far (live.py): frames are read lazily, so later ones see it."""
        self.audio, self.n_frames = audio, n_frames

    def _opened(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, FrameFeatures]:
        """Openness of frames [start, stop), their learned opening in spreads from its mean over this
        voice's voiced frames, and their features; frames not seen before join the levels."""
        ext = frame_features(self.audio, self.fps, start - CONTEXT, stop)  # the learned opening looks back
        feat = ext.since(CONTEXT)
        lv, new = self._levels, slice(max(self._seen - start, 0), None)
        if stop > self._seen:
            lv.loudness.add(feat.loudness[new])
        level = lv.loudness.value()
        opened = openness(feat, level, self.mapping)
        learned = self.mapping.learned.predict(ext.mel, level)
        if stop > self._seen:
            voiced = opened[new] > 0
            lv.openness.add(opened[new][voiced])
            lv.learned.add(learned[new][voiced])
            self._seen = stop
        spread = lv.learned.std
        if lv.learned.count < MIN_LEARNED_FRAMES or spread == 0.0:  # a live voice's first second
            return opened, np.zeros_like(learned), feat
        # It fades with the sound as the openness does, so it opens nothing that is closing.
        z = (learned - lv.learned.mean) / spread * fade(feat.loudness, level)
        return opened, z.astype(np.float32), feat

    def _raw(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        opened, learned, feat = self._opened(start, stop)
        # Relative to this speech's own voiced frames, so typical speech spans the bank's shapes.
        wide = self._levels.openness.value()
        ref = max(wide, MIN_OPEN_REF)
        if self.range.by_rank:
            ranked = np.maximum(self._levels.openness.rank(opened), MIN_RANK) * (wide / ref)
            opened = np.where(opened > 0, ranked, 0.0).astype(np.float32)
        else:
            opened = np.clip(opened / ref, 0.0, 1.0).astype(np.float32)
        spread = np.clip((feat.f2_share - 0.05) / 0.5, 0.0, 1.0) - 0.5
        return opened, (spread * opened).astype(np.float32), learned

    def __iter__(self) -> Iterator[MouthShape]:
        r = self.range
        width_mid, width_span = (r.width_lo + r.width_hi) / 2, (r.width_hi - r.width_lo) * WIDTH_GAIN
        # The learned opening moves a voiced frame's aperture by this much per spread of its own.
        learned_step = self.mapping.learned_weight * r.spread
        # Rolling buffer of raw targets for frames [base, base + len(buf)).
        base, done = -LOOKAHEAD, 0
        open_buf = np.zeros(LOOKAHEAD, np.float32)  # silence before the start
        spread_buf = np.zeros(LOOKAHEAD, np.float32)
        learned_buf = np.zeros(LOOKAHEAD, np.float32)
        computed = 0
        while done < self.n_frames:
            need = min(done + LOOKAHEAD + 1, self.n_frames)
            if computed < need:
                stop = min(max(need, computed + CHUNK), self.n_frames)
                o, s, z = self._raw(computed, stop)
                open_buf, spread_buf = np.concatenate([open_buf, o]), np.concatenate([spread_buf, s])
                learned_buf = np.concatenate([learned_buf, z])
                computed = stop
            # Pad past the end with silence so the last frames still have look-ahead.
            i = done - base
            raw = _take(open_buf, i - LOOKAHEAD - MAX_HOLD, len(SMOOTH_KERNEL) + MAX_HOLD)
            window = _held(raw, self.mapping.hold)
            swindow = _take(spread_buf, i - LOOKAHEAD, len(SMOOTH_KERNEL))
            # A frame that is itself silent is shut: smoothing must not leak opening into pauses.
            shown = float(window @ SMOOTH_KERNEL) if open_buf[i] > 0.0 else 0.0
            aperture = r.aperture(shown)
            if shown > 0.0:
                aperture = min(max(aperture + learned_step * float(learned_buf[i]), r.closed), r.open)
            yield MouthShape(
                aperture=aperture,
                width=width_mid + width_span * float(swindow @ SMOOTH_KERNEL),
                openness=shown,
            )
            done += 1
            # Drop what no later frame needs.
            if i > 2 * LOOKAHEAD + MAX_HOLD + CHUNK:
                cut = i - LOOKAHEAD - MAX_HOLD
                open_buf, spread_buf, learned_buf = open_buf[cut:], spread_buf[cut:], learned_buf[cut:]
                base += cut


def _held(raw: np.ndarray, hold: int) -> np.ndarray:
    """Peak hold over MAX_HOLD + len(SMOOTH_KERNEL) raw values: each of the last len(SMOOTH_KERNEL)
    becomes the largest of itself and the `hold` before it."""
    held = np.lib.stride_tricks.sliding_window_view(raw, hold + 1).max(axis=1)
    return held[len(held) - len(SMOOTH_KERNEL):]


def _take(buf: np.ndarray, start: int, n: int) -> np.ndarray:
    """buf[start:start+n], reading zeros (silence) outside it."""
    out = np.zeros(n, np.float32)
    lo, hi = max(start, 0), min(start + n, len(buf))
    if hi > lo:
        out[lo - start:hi - start] = buf[lo:hi]
    return out
