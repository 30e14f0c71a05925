"""How far the mouth opens, read from the shape of the whole spectrum by a map learned across people.

The hand-written mapping (`shape.openness`) reads two numbers of a frame's sound: how loud it is
and where its energy sits (the centroid: a vowel's openness). A mouth shapes the whole spectrum,
and much of how it does so is shared by people: this is a linear map from the log-mel spectrum of
the frame and of the CONTEXT frames before it (dB under the speech level) to the filmed aperture,
a ridge regression fitted on the clips of five speakers (the four shared ground-truth clips and the
psychopy speaker; `python -m bench.learned_mapping ... --coefficients` prints it). It looks back
only, so it adds no look-ahead to a live session.

It does not replace the hand-written openness. Alone, leaving each speaker out, it fits some voices
better and others worse, and on all of them together it ties (docs/lite-engine.md, "A mapping
learned across speakers"). Blended into the hand-written aperture, at `shape.LEARNED_WEIGHT` of the
person's spread of openings, it raised the mean over the 36 held-out splits, on the target and
rendered, and no speaker's own mean fell by more than 0.002 (figures in the docs).
`shape.ShapeStream` does the blending with the running moments below: a prediction is used in
spreads from its mean over this voice's voiced frames, so neither the training speakers' scale nor
the recording's matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CONTEXT", "FLOOR_DB", "SHIPPED_OPENING", "LearnedOpening", "RunningMoments", "context_features"]

CONTEXT = 2  # earlier frames read besides the frame's own
FLOOR_DB = 60.0  # bands further under the speech level than this read as this (silence is silence)

# (CONTEXT + 1) x MEL_BANDS coefficients, oldest frame first, each band from 100 Hz up, per dB
# under the speech level; fitted by bench/learned_mapping.py on FaceMesh's reading of the filmed
# mouths (the engine's own landmarks, not the dlib points its quality is judged by), each clip's
# picture moved by its own A/V offset.
COEFFICIENTS: tuple[float, ...] = (
    0.0006173, -0.003184, 0.004237, 0.008866, -0.004721, -0.008408, 0.002878, 0.003042,
    -0.001259, 0.003357, -0.002466, 0.002212, -0.0005102, 0.004531, -0.0008041, -0.006936,
    -0.001273, -0.005793, 0.001986, 0.007344, -0.003145, -0.008866, 0.001733, 0.005085,
    6.48e-05, 0.002617, -0.0005343, 0.005156, 0.001847, 0.004931, -0.003615, -0.006588,
    -0.001528, -0.006503, 0.002566, 0.008042, 0.001766, -0.005073, 0.002609, 0.007143,
    0.004062, 0.003974, 0.002988, 0.008277, 0.003268, 0.004908, -0.005703, -0.01225,
)


def context_features(mel_db: np.ndarray, level_db: float) -> np.ndarray:
    """(n, (CONTEXT + 1) * MEL_BANDS) from (n + CONTEXT, MEL_BANDS) mel dB: each of the last n
    frames with the CONTEXT before it, oldest first, in dB under `level_db`, floored."""
    rel = np.maximum(np.asarray(mel_db, np.float32) - level_db, -FLOOR_DB)
    n = len(rel) - CONTEXT
    return np.concatenate([rel[k:k + n] for k in range(CONTEXT + 1)], axis=1)


@dataclass(frozen=True)
class LearnedOpening:
    coefficients: tuple[float, ...] = COEFFICIENTS

    def predict(self, mel_db: np.ndarray, level_db: float) -> np.ndarray:
        """(n,) from (n + CONTEXT, MEL_BANDS) mel dB (see `context_features`); larger opens more."""
        return (context_features(mel_db, level_db) @ np.asarray(self.coefficients, np.float32)).astype(np.float32)


SHIPPED_OPENING = LearnedOpening()


class RunningMoments:
    """Mean and spread of a stream of values, O(1) per value."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        self.count += v.size
        self.total += float(v.sum())
        self.squares += float((v * v).sum())

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        return float(np.sqrt(max(self.squares / self.count - self.mean ** 2, 0.0)))
