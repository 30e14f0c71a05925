"""The speaker's own audio-to-mouth mapping, learned at preprocess from the avatar video's soundtrack.

An avatar video usually shows the person speaking with their own voice: paired data for exactly
this face. From it we fit a small ridge regression from the speech spectrum around each frame
(N_MELS mel-band levels over CONTEXT frames, normalised per utterance) to the aperture filmed on
that frame. It is used only where it predicts held-out frames of the same clip better than the
generic mapping (shape.py) does, and then only blended with it; a silent clip, music, a
voice-over or a mouth that does not follow the sound leaves it out.

Per-utterance normalisation (each band's mean and spread over the voiced frames of the first
PRIME_S seconds) is what lets another voice, level or microphone drive the same mapping: the
mapping sees how this frame differs from the speech around it, not absolute levels.

Look-ahead: frame t reads the spectra of frames t-CONTEXT_BACK .. t+CONTEXT_AHEAD, each centred
LEAD_S after its frame and WINDOW/2 wide, so it needs audio up to (t + 2.5) / fps + 52 ms: four
frames past frame t's start at 25 fps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...media.frame_timing import SAMPLE_RATE
from .audio_features import N_MELS, log_mel

__all__ = [
    "CONTEXT_AHEAD",
    "CONTEXT_BACK",
    "MIN_OWN_R",
    "NOT_THEIR_VOICE",
    "SpeakerFeatures",
    "SpeakerModel",
    "av_offset",
    "blend_openness",
    "fit_speaker",
    "shifted_r",
    "to_openness",
]

CONTEXT_BACK, CONTEXT_AHEAD = 2, 2  # frames of spectrum either side of the frame (coarticulation)
PRIME_S = 10.0  # per-utterance statistics come from the first this many seconds
STATS_GROWTH = 1.25  # a live utterance's statistics are taken again when its audio grows this much
VOICED_DB = 24.0  # a frame within this of the 95th-percentile level counts as speech for the statistics
MIN_STATS_FRAMES = 10  # fewer voiced frames than this: statistics over every frame instead
MIN_BAND_STD_DB = 1.0  # floor on a band's spread, so a flat band does not blow up
Z_CLIP = 3.0  # normalised levels are clipped: silence and clicks must not swing a linear map
LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # ridge strengths tried (per frame, on z-scored inputs)
CV_FOLDS = 8  # contiguous blocks of the clip, each held out in turn
BLEND_WEIGHTS = (0.5, 1.0, 2.0)  # the learned openness's weight against the generic's (1)
MIN_VOICED_FRAMES = 25  # 1 s of speech at 25 fps: less is too little to learn a voice from
MIN_GAIN = 0.05  # the blend must beat the generic mapping's held-out r by this much to be used
# Whether the soundtrack is this person's voice at all. Every speaker's jaw follows the loudness
# of their own speech (shut in pauses, open on vowels), so the generic mapping, with nothing
# fitted to the clip, follows the filmed mouth from it: r 0.30-0.57 on the eight half-clip
# avatars of the ground-truth clips (2 of 24 shorter splits fall under 0.2; gated, neither got
# worse, and one lost a speaker model that had cost its render 0.07 in r_gt). Someone else's
# voice mostly gives r near 0, and a fit there finds noise that CV scores above it: lp_d11's
# half with a Chinese voice-over, held-out r -0.11 -> -0.01, was "used" and its render's r_gt
# fell from 0.50 to 0.00. Under MIN_OWN_R nothing is learned from the soundtrack (a voice-over,
# music, a dub). A voice-over that happens to follow the mouth by chance (r 0.3-0.55 on 2-4 s
# halves) still passes; there MIN_GAIN guards.
MIN_OWN_R = 0.2
NOT_THEIR_VOICE = "the soundtrack does not follow this mouth (not the person's own voice?)"
MAX_OFFSET = 4  # frames: the most the avatar video's sound may lead or trail its picture
_EPS = 1e-9


class SpeakerFeatures:
    """Normalised mel levels with context, for any run of frames of one utterance."""

    def __init__(self, audio: np.ndarray, fps: float) -> None:
        self.fps = fps
        self._stats_samples = -1
        self.update(audio)

    def update(self, audio: np.ndarray) -> None:
        """Use `audio` from now on. A live utterance grows: until its first PRIME_S seconds are
        all here, the band statistics are taken again over what has arrived (the batch path has
        them all at once, so it computes them exactly once). They are refreshed as the audio grows
        by a quarter, so a live utterance pays for a handful of passes, not one per frame."""
        self.audio = audio
        prime_samples = int(PRIME_S * SAMPLE_RATE)
        grown = len(audio) >= min(prime_samples, STATS_GROWTH * self._stats_samples)
        if self._stats_samples >= prime_samples or not grown or len(audio) <= self._stats_samples:
            return
        self._stats_samples = min(len(audio), prime_samples)
        prime = int(PRIME_S * self.fps)
        fps = self.fps
        mel = log_mel(audio, fps, 0, prime) if len(audio) else np.zeros((0, N_MELS), np.float32)
        mel = mel[: int(np.ceil(len(audio) / SAMPLE_RATE * fps))]  # frames inside the audio only
        level = 10 * np.log10(np.sum(10 ** (mel / 10), axis=1) + _EPS) if len(mel) else np.zeros(0)
        voiced = level >= (np.percentile(level, 95) - VOICED_DB if len(level) else 0.0)
        use = mel[voiced] if voiced.sum() >= MIN_STATS_FRAMES else mel
        if len(use) == 0:
            self.mean, self.std = np.zeros(N_MELS, np.float32), np.ones(N_MELS, np.float32)
        else:
            self.mean = use.mean(axis=0).astype(np.float32)
            self.std = np.maximum(use.std(axis=0), MIN_BAND_STD_DB).astype(np.float32)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, N_MELS * (CONTEXT_BACK + 1 + CONTEXT_AHEAD)) inputs of frames [start, stop)."""
        n = stop - start
        mel = log_mel(self.audio, self.fps, start - CONTEXT_BACK, stop + CONTEXT_AHEAD)
        z = np.clip((mel - self.mean) / self.std, -Z_CLIP, Z_CLIP)
        width = CONTEXT_BACK + 1 + CONTEXT_AHEAD
        return np.concatenate([z[k:k + n] for k in range(width)], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SpeakerModel:
    """A linear map from `SpeakerFeatures` to this person's aperture (inter-ocular units)."""

    weights: np.ndarray  # (D,) float32
    bias: float
    blend: float  # weight of the learned openness against the generic openness's 1

    def aperture(self, features: np.ndarray) -> np.ndarray:
        return (features @ self.weights + self.bias).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights, bias=np.float32(self.bias), blend=np.float32(self.blend),
                 context=np.array([CONTEXT_BACK, CONTEXT_AHEAD, N_MELS]))

    @classmethod
    def load(cls, path: Path) -> SpeakerModel | None:
        """The stored model, or None if it was made for other features (then the generic one serves)."""
        with np.load(path) as z:
            if tuple(z["context"]) != (CONTEXT_BACK, CONTEXT_AHEAD, N_MELS):
                return None
            return cls(weights=z["weights"], bias=float(z["bias"]), blend=float(z["blend"]))


def fit_speaker(
    audio: np.ndarray | None, fps: float, aperture: np.ndarray, generic: np.ndarray, curve: tuple[float, ...]
) -> tuple[SpeakerModel | None, dict[str, Any]]:
    """Learn this speaker's mapping, or say why not. Returns (model or None, facts for the manifest).

    `aperture` is the filmed aperture per frame; `generic` the generic mapping's openness for the
    same frames (0 in pauses); `curve` the openness-to-aperture curve (ShapeRange.curve) both
    are read through. Costs a few milliseconds for a minute of video.
    """
    n = len(aperture)
    if audio is None or len(audio) == 0:
        return None, {"used": False, "reason": "the video has no soundtrack"}
    voiced = generic[:n] > 0
    if voiced.sum() < MIN_VOICED_FRAMES:
        return None, {"used": False, "reason": f"too little speech ({int(voiced.sum())} frames)"}
    # The picture may trail or lead its own sound (a camera's or an editor's offset). The mapping
    # must learn the mouth that goes with the sound, not the file's offset, or every render would
    # be out of sync by it: pair each frame's sound with the mouth `offset` frames later.
    offset = av_offset(_to_aperture(generic[:n], curve), aperture)
    keep = np.arange(max(-offset, 0), n - max(offset, 0))
    x = SpeakerFeatures(audio, fps).frames(0, n)[keep]
    y = aperture[keep + offset].astype(np.float64)
    generic = generic[keep]
    lam, pred = max(_cross_predict(x, y, _folds(len(y))).items(), key=lambda lp: _r(lp[1], y))
    r_generic = _r(_to_aperture(generic, curve), y)
    learned = to_openness(pred, curve)
    scores = {w: _r(_to_aperture(blend_openness(generic, learned, w), curve), y) for w in BLEND_WEIGHTS}
    weight = max(scores, key=lambda w: scores[w])
    facts = {
        "frames": n,
        "av_offset_frames": offset,
        "voiced_frames": int(voiced.sum()),
        "heldout_r_generic": round(r_generic, 3),
        "heldout_r_blend": round(scores[weight], 3),
        "ridge": lam,
        "blend": weight,
    }
    if r_generic < MIN_OWN_R:
        return None, {"used": False, "reason": NOT_THEIR_VOICE} | facts
    if scores[weight] < r_generic + MIN_GAIN:
        return None, {"used": False, "reason": "not better than the generic mapping on held-out frames"} | facts
    (w, b), = _ridge_path(x, y, (lam,))
    return SpeakerModel(weights=w.astype(np.float32), bias=b, blend=weight), {"used": True} | facts


def av_offset(predicted: np.ndarray, filmed: np.ndarray, max_offset: int = MAX_OFFSET) -> int:
    """Frames by which the filmed mouth trails the sound (negative: leads it): the shift that best
    lines the generic mapping's prediction up with it. Ties go to the smaller shift."""
    best, best_r = 0, -2.0
    for k in sorted(range(-max_offset, max_offset + 1), key=abs):
        r = shifted_r(predicted, filmed, k)
        if r is not None and r > best_r + 1e-9:
            best, best_r = k, r
    return best


def shifted_r(predicted: np.ndarray, filmed: np.ndarray, offset: int) -> float | None:
    """r of the prediction against the mouth `offset` frames later; None with under 3 frames left."""
    n = len(filmed)
    lo, hi = max(-offset, 0), n - max(offset, 0)
    if hi - lo < 3:
        return None
    return _r(predicted[lo:hi], filmed[lo + offset:hi + offset])


def blend_openness(generic: np.ndarray, learned: np.ndarray, weight: float) -> np.ndarray:
    """The openness shown: generic and learned averaged with `weight`; still exactly 0 in pauses."""
    out = (generic + weight * learned) / (1.0 + weight)
    return np.where(generic > 0, out, 0.0).astype(np.float32)


def to_openness(aperture: np.ndarray, curve: tuple[float, ...]) -> np.ndarray:
    """Inverse of the openness-to-aperture curve, clipped to [0, 1]."""
    c = np.maximum.accumulate(np.asarray(curve, np.float64))  # non-decreasing, as np.interp needs
    return np.interp(aperture, c, np.linspace(0.0, 1.0, len(c))).astype(np.float32)


def _to_aperture(openness: np.ndarray, curve: tuple[float, ...]) -> np.ndarray:
    return np.interp(openness, np.linspace(0.0, 1.0, len(curve)), curve)


def _folds(n: int) -> list[np.ndarray]:
    return [f for f in np.array_split(np.arange(n), min(CV_FOLDS, n)) if len(f)]


def _cross_predict(x: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> dict[float, np.ndarray]:
    """{lambda: held-out predictions}: each fold predicted by a fit on the rest, less the frames
    whose context overlaps the fold. One SVD per fold serves every lambda."""
    gap = CONTEXT_BACK + CONTEXT_AHEAD
    preds = {lam: np.zeros_like(y) for lam in LAMBDAS}
    idx = np.arange(len(y))
    for f in folds:
        train = (idx < f[0] - gap) | (idx > f[-1] + gap)
        for lam, (w, b) in zip(LAMBDAS, _ridge_path(x[train], y[train], LAMBDAS), strict=False):
            preds[lam][f] = x[f] @ w + b
    return preds


def _ridge_path(x: np.ndarray, y: np.ndarray, lambdas: tuple[float, ...]) -> list[tuple[np.ndarray, float]]:
    """Ridge weights and intercept for each lambda; lambda is per frame, so it means the same for
    any clip length."""
    mu, y_mu = x.mean(axis=0), float(y.mean())
    u, sv, vt = np.linalg.svd((x - mu).astype(np.float64), full_matrices=False)
    uty = u.T @ (y - y_mu)
    out = []
    for lam in lambdas:
        w = vt.T @ (sv / (sv**2 + lam * len(x)) * uty)
        out.append((w, y_mu - float(mu @ w)))
    return out


def _r(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) < _EPS or np.std(b) < _EPS:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
