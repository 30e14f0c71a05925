"""The lite engine fed with audio as it arrives: a thin causal wrapper over ShapeStream and MouthPicker.

`ShapeStream` computes mouth shapes lazily, a few frames ahead of the one it yields, and reads
its `audio` and `n_frames` as it goes. A live utterance therefore drives one ShapeStream by
handing it the audio received so far and, before each frame, a frame count that ends just past
that frame's smoothing look-ahead, or sooner, at the last frame whose audio is all here: it never
reads audio that has not arrived. Given the whole utterance up front it yields exactly the batch
path's shapes; in real time the differences are that the speech level is learnt from the audio
heard so far instead of the first 10 s, and that a frame whose look-ahead is late is smoothed
as if the late frames were silent.

The look-ahead frame i needs past its own end (25 fps): the smoothing's LOOKAHEAD frames after
it, each analysed at its midpoint with a half-window of WINDOW/2 samples:
(2 - 0.5) x 40 ms + 32 ms = 92 ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ...media.frame_timing import SAMPLE_RATE
from ..base import FrameSession
from .audio_features import WINDOW
from .bank import MouthPicker
from .compose import paste_mouth
from .shape import (
    LEVEL_PERCENTILE,
    LOOKAHEAD,
    LOUDNESS_BINS_DB,
    MIN_LEVEL_DB,
    MouthShape,
    RunningPercentile,
    ShapeStream,
    SpeechLevels,
)

__all__ = ["LiteSession", "lookahead_s"]

# The batch path learns the speech level from the first 10 s; live, the first frames may be
# room noise at -50 to -60 dB, which a level learnt from them alone would read as speech. Until
# WARM_FRAMES louder than noise (MIN_LEVEL_DB) have been heard, the level is at least
# PRIOR_LEVEL_DB, a plain speaking level in the 300-3000 Hz band (the media clips' speech sits at
# -5 to -18 dB there), so noise stays shut however long it lasts before the first word.
PRIOR_LEVEL_DB = -25.0
WARM_FRAMES = 25


class WarmLevel(RunningPercentile):
    """The loudness level, held at PRIOR_LEVEL_DB or above until it has heard enough that is not noise."""

    def __init__(self) -> None:
        super().__init__(*LOUDNESS_BINS_DB, LEVEL_PERCENTILE, MIN_LEVEL_DB)
        self.heard = 0  # frames louder than noise

    def add(self, values: np.ndarray) -> None:
        super().add(values)
        self.heard += int(np.count_nonzero(values >= MIN_LEVEL_DB))

    def value(self) -> float:
        v = super().value()
        return max(v, PRIOR_LEVEL_DB) if self.heard < WARM_FRAMES else v


def lookahead_s(fps: float) -> float:
    """Seconds of audio past frame i's end that its shape reads (see the module docstring)."""
    return (LOOKAHEAD - 0.5) / fps + WINDOW / 2 / SAMPLE_RATE


def heard_frames(samples: int, fps: float) -> int:
    """Frames whose whole analysis window (WINDOW samples centred on the frame's midpoint) lies
    within the first `samples` of the audio."""
    return max(math.floor((samples - WINDOW // 2) * fps / SAMPLE_RATE - 0.5) + 1, 0)


class _Utterance:
    """One utterance's ShapeStream and MouthPicker, driven frame by frame."""

    def __init__(self, renderer, fps: float, levels: SpeechLevels) -> None:
        self.renderer, self.fps, self.levels = renderer, fps, levels
        self.picker = MouthPicker(renderer.bank, n_frames=len(renderer.frames))
        self.shapes: ShapeStream | None = None
        self.iterator: Iterator[MouthShape] | None = None
        self.next = 0  # the utterance frame the iterator yields next

    def shape(self, i: int, audio: np.ndarray, final: bool) -> MouthShape:
        assert i == self.next, f"utterance frames come in order: expected {self.next}, got {i}"
        total = math.ceil(len(audio) * self.fps / SAMPLE_RATE - 1e-9)
        # Frames whose features may be computed now: all of them once final, else up to the
        # smoothing look-ahead of frame i, but only those whose audio is all here. A frame's
        # features are computed once and kept: one computed before its audio came would read as
        # silence, and stay shut when the audio does come. A feed that keeps only just ahead of
        # the clock leaves frame i without its look-ahead; frame i then speaks without it.
        n = max(total, i + 1) if final else max(min(i + LOOKAHEAD + 1, heard_frames(len(audio), self.fps)), i + 1)
        if self.shapes is None:
            # Priming reads frames [0, n): only audio that is here.
            self.shapes = ShapeStream(audio, self.fps, n, self.renderer.shape_range,
                                      levels=self.levels, mapping=self.renderer.mapping)
            self.iterator = iter(self.shapes)
        self.shapes.grow(audio, max(n, self.shapes.n_frames))
        self.next += 1
        assert self.iterator is not None
        return next(self.iterator)


class LiteSession(FrameSession):
    """Live frames from a `LiteRenderer`; idle frames reuse one shut mouth per background frame."""

    def __init__(self, renderer, fps: float) -> None:
        self.renderer, self.fps = renderer, fps
        self._lookahead = lookahead_s(fps)
        self._utterance: tuple[int, _Utterance] | None = None
        self._idle = idle_mouths(renderer)
        # Speech levels live as long as the session: later utterances start on the voice's scale.
        self._levels = SpeechLevels(loudness=WarmLevel())

    @property
    def lookahead_s(self) -> float:
        return self._lookahead

    def speech_frame(self, utterance: int, i: int, background: int, audio: np.ndarray, final: bool) -> np.ndarray:
        if self._utterance is None or self._utterance[0] != utterance:
            self._utterance = (utterance, _Utterance(self.renderer, self.fps, self._levels))
        state = self._utterance[1]
        k = state.picker.pick(state.shape(i, np.asarray(audio, np.float32), final), background)
        return self._paste(background, k)

    def idle_frame(self, background: int) -> np.ndarray:
        return self._paste(background, self._idle[background])

    def _paste(self, b: int, k: int) -> np.ndarray:
        r = self.renderer
        return paste_mouth(r.frames[b], r.landmarks[b], r.sources[k], r.source_points[k])


def idle_mouths(renderer) -> list[int]:
    """The mouth shown on each background frame while idle: what a silent render picks.

    One MouthPicker walks the background frames in order with a silent target, exactly as the
    batch path does through a pause, so the closed mouth stays the same one wherever it can.
    """
    r = renderer.shape_range
    silent = MouthShape(aperture=r.aperture(0.0), width=(r.width_lo + r.width_hi) / 2, openness=0.0)
    picker = MouthPicker(renderer.bank, n_frames=len(renderer.frames))
    return [picker.pick(silent, b) for b in range(len(renderer.frames))]
