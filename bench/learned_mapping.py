"""A mapping learned from other speakers against the hand-written one, leaving one speaker out.

Issue 26 asks a learned piece to earn its place on held-out data. The per-speaker mapping, fitted
on the avatar's own few seconds of soundtrack, did not (docs/lite-engine.md). This asks the same of
one learned across people, which has far more frames to learn from: a ridge regression from the
speech's log-mel spectrum (the frame's own and CONTEXT frames either side, in dB under the speech
level) to the filmed aperture, fitted on every other speaker's clips whole, predicts the held-out
speaker's mouth on each of the six splits of each of their clips (`lipsync_eval.tuning_splits`).

Both mouths are scored as `lipsync_splits` scores a target, against the filmed mouth at lag 0, and
the learned one keeps the shipped pauses (a frame the shipped target shuts is its lowest value), so
what is compared is how each orders the speaking frames. Each clip is one speaker unless
`--speaker` names clips of one person (two clips of the same face would otherwise teach each other):

    python -m bench.learned_mapping [CLIP ...] [--speaker A.mp4,B.mp4] [--detector facemesh]
        [--mels 16] [--context 2] [--ridge 10]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from functools import cached_property

import librosa
import numpy as np

from bench import lipsync_eval as ev
from bench.lipsync_splits import (
    OTHERS,
    SHIPPED_VARIANT,
    TUNING,
    Groups,
    SplitScore,
    clip_label,
    existing_clips,
    group_summaries,
    target_shapes,
)
from musetalk_server.engines.lite.audio_features import WINDOW, power_spectra
from musetalk_server.engines.lite.shape import LEVEL_PERCENTILE
from musetalk_server.media.frame_timing import SAMPLE_RATE

MEL_HZ = (100.0, 8000.0)
FLOOR_DB = 60.0  # bands further than this under the speech level read as this (silence is silence)


@dataclass(frozen=True)
class Features:
    mels: int
    context: int

    @cached_property
    def bank(self) -> np.ndarray:
        """(mels, WINDOW/2+1) the mel filters, built once for every clip and split."""
        return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=WINDOW, n_mels=self.mels, fmin=MEL_HZ[0], fmax=MEL_HZ[1])

    def __call__(self, audio: np.ndarray, n: int) -> np.ndarray:
        """(n, mels * (2 context + 1)): per frame, its log-mel spectrum and its neighbours', relative
        to this audio's speech level, so a recording's gain does not matter."""
        power = power_spectra(audio, (np.arange(n) + 0.5) / ev.FPS)
        mel = power @ self.bank.T
        mel_db = 10 * np.log10(mel + 1e-10)
        # The speech level: the frames' whole mel power at the engine's percentile, on the bands' scale.
        level = np.percentile(10 * np.log10(mel.sum(axis=1) + 1e-10), LEVEL_PERCENTILE)
        rel = np.maximum(mel_db - level, -FLOOR_DB) / 20.0
        padded = np.pad(rel, ((self.context, self.context), (0, 0)), mode="edge")
        return np.concatenate([padded[k:k + n] for k in range(2 * self.context + 1)], axis=1)


@dataclass(frozen=True)
class Ridge:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, ridge: float) -> Ridge:
        """Least squares on standardised features with an L2 penalty of `ridge` per 100 frames."""
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        gram = z.T @ z + ridge * len(z) / 100.0 * np.eye(z.shape[1])
        return cls(mean, scale, np.linalg.solve(gram, z.T @ (y - y.mean())))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights


def speakers_of(clips: list[str], groups: list[list[str]]) -> dict[str, str]:
    """Clip label -> speaker: a clip is its own speaker unless a group names it with others."""
    out = {c: c for c in clips}
    for group in groups:
        for c in group:
            out[c] = group[0]
    return out


def learned_scores(c: ev.TuningClip, model: Ridge, features: Features) -> list[tuple[SplitScore, SplitScore]]:
    """(hand-written, learned) per split of `c`, each against the filmed mouth."""
    out = []
    for avatar, drive in ev.tuning_splits(len(c.filmed)):
        shapes = target_shapes(c, avatar, drive, SHIPPED_VARIANT)
        n = len(shapes)
        hand = np.array([s.aperture for s in shapes])
        learned = model.predict(features(ev.audio_of(c.audio, drive), n))
        speaking = np.array([s.openness > 0 for s in shapes])
        learned = np.where(speaking, learned, learned[speaking].min() if speaking.any() else 0.0)
        filmed = c.filmed[drive][:n]
        out.append((SplitScore(ev.pearson(hand, filmed), float("nan")),
                    SplitScore(ev.pearson(learned, filmed), float("nan"))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=list(ev.GROUND_TRUTH),
                    help="shared ground-truth clips by name, or paths to talking clips (default: the four tuning clips)")
    ap.add_argument("--speaker", action="append", default=[], metavar="CLIP,CLIP",
                    help="clips (as given) that show one person; repeat for more people")
    ap.add_argument("--detector", choices=("facemesh", "dlib"), default="dlib")
    ap.add_argument("--mels", type=int, default=16)
    ap.add_argument("--context", type=int, default=2, help="frames either side")
    ap.add_argument("--ridge", type=float, default=10.0)
    args = ap.parse_args(argv)
    groups = [g.split(",") for g in args.speaker]
    strays = [c for g in groups for c in g if c not in args.clips]
    if strays:
        ap.error(f"--speaker names clips not given: {', '.join(strays)}")
    speaker = speakers_of(args.clips, groups)
    if len(set(speaker.values())) < 2:
        ap.error("leaving one speaker out needs clips of at least two speakers")
    clips = dict(zip(args.clips, existing_clips(ap, args.clips), strict=True))
    measure = ev.measure_by(args.detector)
    features = Features(args.mels, args.context)
    started = time.perf_counter()
    loaded = {a: ev.tuning_clip(clip, measure) for a, clip in clips.items()}
    # Every clip whole, its filmed aperture standardised: people open their mouths by different amounts.
    data = {a: (features(c.audio, len(c.filmed)), (c.filmed - c.filmed.mean()) / (c.filmed.std() + 1e-9))
            for a, c in loaded.items()}
    groups_out: Groups = {TUNING: ([], []), OTHERS: ([], [])}
    for a, c in loaded.items():
        others = [data[b] for b in loaded if speaker[b] != speaker[a]]
        model = Ridge.fit(np.concatenate([x for x, _ in others]), np.concatenate([y for _, y in others]), args.ridge)
        scores = learned_scores(c, model, features)
        hand, learned = [h for h, _ in scores], [lr for _, lr in scores]
        print(f"{clip_label(clips[a])} (learned from {len(others)} clips of other speakers): hand-written "
              f"{np.mean([s.r for s in hand]):.3f}, learned {np.mean([s.r for s in learned]):.3f}", flush=True)
        b, n = groups_out[TUNING if clips[a] in ev.GROUND_TRUTH else OTHERS]
        b += hand
        n += learned
    print(f"\ntarget mouth, {args.detector}, as filmed; learned: ridge {args.ridge:g} on {args.mels} mel bands, "
          f"±{args.context} frames, leaving each speaker out")
    print("\n".join(group_summaries(groups_out, False, ("hand-written", "learned"))))
    print(f"[{time.perf_counter() - started:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
