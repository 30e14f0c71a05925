"""The lite engine's learned opening, judged leaving one speaker out, and fitted for shipping.

Issue 26 asks a learned piece to earn its place on held-out data. The per-speaker mapping, fitted
on the avatar's own few seconds of soundtrack, did not (docs/lite-engine.md). The learned opening
(`engines/lite/learned_opening.py`) is learned across people instead: a ridge regression from the
engine's own log-mel features (the frame's and the CONTEXT before it, dB under the speech level) to
the filmed aperture as FaceMesh reads it (the engine's own landmarks), every clip standardised and
its picture moved by its own A/V offset.

For each speaker, a model fitted on every other speaker's clips whole drives the engine on each of
the six splits of the held-out speaker's clips (`lipsync_eval.tuning_splits`), and the mouth is
scored as `lipsync_splits` scores one, against the filmed mouth at lag 0 (read by `--detector`),
against the engine without it (hand-written only). `--render` renders the splits and reads the
frames back. Each clip is one speaker unless `--speaker` names clips of one person (two clips of
the same face would otherwise teach each other). `--coefficients` fits on every clip given and
prints what `learned_opening.COEFFICIENTS` ships:

    python -m bench.learned_mapping [CLIP ...] [--speaker A.mp4,B.mp4] [--detector facemesh]
        [--weight 0.25] [--ridge 10] [--render] [--coefficients]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench import lipsync_eval as ev
from bench.lipsync_splits import (
    OTHERS,
    TUNING,
    Groups,
    Mouth,
    Rendered,
    Variant,
    clip_label,
    existing_clips,
    group_summaries,
    split_scores,
    target,
)
from musetalk_server.engines.lite.audio_features import frame_features
from musetalk_server.engines.lite.learned_opening import CONTEXT, LearnedOpening, context_features
from musetalk_server.engines.lite.own_voice import paired
from musetalk_server.engines.lite.shape import LEVEL_PERCENTILE, SHIPPED

RIDGE = 10.0  # the L2 penalty per 100 frames; set before the first leave-one-speaker-out run


def features(audio: np.ndarray, n: int) -> np.ndarray:
    """(n, (CONTEXT + 1) * MEL_BANDS) the learned opening's inputs for frames [0, n) of `audio`,
    under the level a stream of the whole of it settles on (its loudness percentile)."""
    feat = frame_features(audio, ev.FPS, -CONTEXT, n)
    level = float(np.percentile(feat.loudness[CONTEXT:], LEVEL_PERCENTILE))
    return context_features(feat.mel, level)


def filmed_by_facemesh(c: ev.TuningClip) -> np.ndarray:
    """(N,) the clip's filmed aperture as the engine's landmarks read it, standardised: people open
    their mouths by different amounts."""
    y = np.nan_to_num(ev.aperture_of(c.landmarks), nan=0.0)
    return (y - y.mean()) / (y.std() + 1e-9)


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

    @property
    def opening(self) -> LearnedOpening:
        """The engine's form: one coefficient per input. The offset is left out: the engine uses
        the prediction relative to its running mean."""
        return LearnedOpening(tuple(float(f"{w:.4g}") for w in self.weights / self.scale))


def aligned(c: ev.TuningClip) -> tuple[np.ndarray, np.ndarray]:
    """(features, filmed aperture) of a clip's frames, the picture moved by the clip's own A/V
    offset (the lag at which its mouth best follows its sound): what is learned is how a mouth
    shapes its sound, not how far this file's picture trails it (three of the four shared clips'
    do, by 1-3 frames; the psychopy speaker's testMovie leads by 3)."""
    x, y = features(c.audio, len(c.filmed)), filmed_by_facemesh(c)
    k = ev.lagged_r(y, ev.envelope(c.audio, len(y)))[1]  # the mouth at frame t + k shows the sound of t
    return paired(x, y, k)


def fit(clips: list[ev.TuningClip], ridge: float = RIDGE) -> Ridge:
    pairs = [aligned(c) for c in clips]
    return Ridge.fit(np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]), ridge)


def speakers_of(clips: list[str], groups: list[list[str]]) -> dict[str, str]:
    """Clip label -> speaker: a clip is its own speaker unless a group names it with others."""
    out = {c: c for c in clips}
    for group in groups:
        for c in group:
            out[c] = group[0]
    return out


def coefficients_source(opening: LearnedOpening, per_line: int = 8) -> str:
    """`opening`'s coefficients as the Python tuple learned_opening.py holds."""
    values = [f"{float(v)!r}," for v in opening.coefficients]
    lines = [" ".join(values[k:k + per_line]) for k in range(0, len(values), per_line)]
    return "COEFFICIENTS: tuple[float, ...] = (\n" + "".join(f"    {line}\n" for line in lines) + ")"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=list(ev.GROUND_TRUTH),
                    help="shared ground-truth clips by name, or paths to talking clips (default: the four tuning clips)")
    ap.add_argument("--speaker", action="append", default=[], metavar="CLIP,CLIP",
                    help="clips (as given) that show one person; repeat for more people")
    ap.add_argument("--detector", choices=("facemesh", "dlib"), default="dlib", help="who reads the mouths scored")
    ap.add_argument("--weight", type=float, default=SHIPPED.learned_weight, help="the blend's weight (shape.py)")
    ap.add_argument("--ridge", type=float, default=RIDGE)
    ap.add_argument("--render", action="store_true", help="score the rendered frames, not the target mouth")
    ap.add_argument("--coefficients", action="store_true", help="fit on every clip given and print the coefficients")
    args = ap.parse_args(argv)
    groups = [g.split(",") for g in args.speaker]
    strays = [c for g in groups for c in g if c not in args.clips]
    if strays:
        ap.error(f"--speaker names clips not given: {', '.join(strays)}")
    speaker = speakers_of(args.clips, groups)
    if len(set(speaker.values())) < 2 and not args.coefficients:
        ap.error("leaving one speaker out needs clips of at least two speakers")
    clips = dict(zip(args.clips, existing_clips(ap, args.clips), strict=True))
    measure = ev.measure_by(args.detector)
    started = time.perf_counter()
    loaded = {a: ev.tuning_clip(clip, measure, keep_frames=args.render) for a, clip in clips.items()}
    if args.coefficients:
        print(coefficients_source(fit(list(loaded.values()), args.ridge).opening))
        return 0
    without = Variant(replace(SHIPPED, learned_weight=0.0))
    groups_out: Groups = {TUNING: ([], []), OTHERS: ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        mouth: Mouth = Rendered(measure, Path(tmp)) if args.render else target
        for a, c in loaded.items():
            others = [loaded[b] for b in loaded if speaker[b] != speaker[a]]
            opening = fit(others, args.ridge).opening
            learned = Variant(replace(SHIPPED, learned_weight=args.weight, learned=opening))
            base, new = split_scores(c, mouth, without, None), split_scores(c, mouth, learned, None)
            print(f"{clip_label(clips[a])} (learned from {len(others)} clip{'s' * (len(others) > 1)} of other "
                  f"speakers): hand-written {np.mean([s.r for s in base]):.3f}, "
                  f"with the learned opening {np.mean([s.r for s in new]):.3f}", flush=True)
            b, n = groups_out[TUNING if clips[a] in ev.GROUND_TRUTH else OTHERS]
            b += base
            n += new
    print(f"\n{'rendered' if args.render else 'target'} mouth, {args.detector}, as filmed; the learned opening "
          f"blended at {args.weight:g} (ridge {args.ridge:g}), leaving each speaker out")
    print("\n".join(group_summaries(groups_out, args.render, ("hand-written", "with it"))))
    print(f"[{time.perf_counter() - started:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
