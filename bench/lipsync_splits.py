"""The lite mouth on every split of any talking clips, target or rendered, with and without the clips' own A/V offsets.

Issue 26: changes judged on the four clips' forward split did not carry over to unseen faces.
This scores the lite engine's mouth on the six splits `lipsync_eval.tuning_splits` gives of each
clip (the avatar the first or the last 40, 50 or 60 %, driven by the rest) against the filmed
mouth, read by FaceMesh or dlib. The clips are the shared ground-truth clips by name (default:
the four the engine's settings were tuned on) or paths to any talking clip with the speaker's own
voice; the summary keeps the tuning clips apart from the others, which the engine never saw.

Which mouth:
- **target** (default): what the bank is asked for; no render, so a run takes seconds. A target
  gain of +0.02..0.03 often does not survive the render (the picker's discrete choices reshuffle).
- **rendered** (`--render`): each split prepared as an avatar (its frames with their own
  soundtrack) and rendered by the engine in-process, the rendered frames read by the same
  detector. Also reports r_env, the render against the driving speech's envelope (best lag).
  About 15 s a clip per setting on a 2-core VM.

Scored two ways:
- **as filmed**: lag 0, as lipsync_eval scores a render;
- **offsets out** (`--offsets-out`): each clip's filmed mouth first moved by the lag at which it
  best follows its own speech envelope (the file's own A/V offset, as far as the envelope can
  tell: vr_face1 +3, vr_face2 0, lp_d11 +1, lp_d12 +3 frames by dlib), then r averaged over a
  further -2..+2 frames. Three of the four pictures trail their sound, so any change that delays
  the mouth wins "as filmed" here and need not on a clip whose offset goes the other way; a
  change that holds with the offsets out does not lean on them.

Variants are the spread (`--spread share|rank|choice`, the shipped per-avatar choice) and the
generic mapping's settings (`--range-db`, `--vowel`, `--hold`), each against the shipped ones.

Or another checkout's engine (`--release DIR`, e.g. a git worktree of an earlier release), rendered
in a subprocess (bench/release_render.py) without the avatar's soundtrack, the one way every
release can be driven, and read with dlib; against this checkout's engine as the other options
say (`--spread share` is this checkout without the soundtrack too, like for like):

    python -m bench.lipsync_splits [CLIP ...] [--render] [--detector dlib] [--offsets-out] [--spread rank] [--hold 0] ...
    python -m bench.lipsync_splits [CLIP ...] --release ../wt-old [--spread share]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import musetalk_server
from bench import lipsync_eval as ev
from bench.release_render import DLIB_READER
from musetalk_server.engines.lite.bank import MouthBank
from musetalk_server.engines.lite.engine import BANK_FILE, generic_shapes, speaking_bank
from musetalk_server.engines.lite.shape import SHIPPED, GenericMapping, MouthShape, ShapeStream

EXTRA_SHIFTS = (-2, -1, 0, 1, 2)  # frames, with --offsets-out: an unknown offset either way
SAME = 0.02  # a split's r moving by less than this counts as unchanged
TUNING, OTHERS = "shared tuning clips", "other clips (never tuned on)"  # the summary's groups, in this order


@dataclass(frozen=True)
class Variant:
    mapping: GenericMapping = SHIPPED
    spread: str = "choice"  # "share", "rank" or "choice" (engine.speaking_bank)


SHIPPED_VARIANT = Variant()


def variant_bank(landmarks: np.ndarray, own_audio: np.ndarray, v: Variant) -> MouthBank:
    """The bank of an avatar made of these frames (soundtrack `own_audio`), its voiced openness
    spread as `v` says: the engine's own choice, or always by share, or always by rank."""
    if v.spread == "choice":
        return speaking_bank(landmarks, own_audio, ev.FPS, v.mapping)[0]
    bank, _ = speaking_bank(landmarks, None, ev.FPS, v.mapping)
    if v.spread == "rank":  # voiced where the soundtrack opens the mouth, as speaking_bank ranks
        bank = bank.with_voiced(generic_shapes(bank, own_audio, ev.FPS, v.mapping)[0] > 0)
    return bank


# (clip, avatar frames, driving frames, variant) -> (<= driving frames,) mouth aperture
Mouth = Callable[[ev.TuningClip, slice, slice, Variant], np.ndarray]


def target_shapes(c: ev.TuningClip, avatar: slice, drive: slice, v: Variant) -> list[MouthShape]:
    """One target shape per driving frame: the avatar made of `avatar`, driven by `drive`'s audio."""
    bank = variant_bank(c.landmarks[avatar], ev.audio_of(c.audio, avatar), v)
    n = drive.stop - drive.start
    return list(ShapeStream(ev.audio_of(c.audio, drive), ev.FPS, n, bank.shape_range(), mapping=v.mapping))


def target(c: ev.TuningClip, avatar: slice, drive: slice, v: Variant) -> np.ndarray:
    """(drive frames,) the target aperture of the avatar made of `avatar`, driven by `drive`'s audio."""
    return np.array([s.aperture for s in target_shapes(c, avatar, drive, v)])


@dataclass(frozen=True)
class Rendered:
    """The rendered aperture: the avatar made of `avatar` (frames, their landmarks and their own
    soundtrack) prepared and rendered by the lite engine in-process, read back by `measure`."""

    measure: ev.Measure
    work: Path

    def __call__(self, c: ev.TuningClip, avatar: slice, drive: slice, v: Variant) -> np.ndarray:
        engine = ev.make_engine("lite", v.mapping)
        own = ev.audio_of(c.audio, avatar)
        built = ev.build_avatar(engine, c.frames[avatar], self.work, f"split-{avatar.start}-{avatar.stop}", own,
                                points=c.landmarks[avatar])
        if v.spread != SHIPPED_VARIANT.spread:  # prepare made the engine's choice; the variant's bank replaces it
            variant_bank(c.landmarks[avatar], own, v).save(built.engine_dir / BANK_FILE)
        frames = ev.render_all(engine, built, ev.audio_of(c.audio, drive))[0]
        return self.measure.read(frames[:drive.stop - drive.start])


@dataclass
class Release:
    """The rendered aperture by another checkout's lite engine (`root`), read by `reader` (dlib):
    each clip's splits in one subprocess that imports that checkout's `musetalk_server`
    (bench/release_render.py)."""

    root: Path
    work: Path
    reader: str = DLIB_READER  # module:Class, read in the subprocess (release_render.py)
    # The clip last rendered and one aperture per split: one clip at a time, its frames are large.
    done: tuple[ev.TuningClip, list[np.ndarray]] | None = None

    def __call__(self, c: ev.TuningClip, avatar: slice, drive: slice, v: Variant) -> np.ndarray:
        splits = ev.tuning_splits(len(c.filmed))
        if self.done is None or self.done[0] is not c:
            self.done = (c, self._render(c, splits))
        return self.done[1][splits.index((avatar, drive))]

    def _render(self, c: ev.TuningClip, splits: list[tuple[slice, slice]]) -> list[np.ndarray]:
        src, dst = self.work / "splits.npz", self.work / "apertures.npz"
        # Each split's audio is cut here, by the eval's own rule, so both engines hear the same samples.
        audio = {f"audio{k}": ev.audio_of(c.audio, drive) for k, (_, drive) in enumerate(splits)}
        np.savez(src, frames=np.stack(c.frames), landmarks=c.landmarks, fps=ev.FPS,
                 splits=np.array([(a.start, a.stop, d.start, d.stop) for a, d in splits]), **audio)
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(self.root / "service"), str(ev.ROOT)])}
        subprocess.run([sys.executable, "-m", "bench.release_render", str(src), str(dst), self.reader], cwd=ev.ROOT,
                       env=env, check=True)
        with np.load(dst) as z:
            return [z[f"split{k}"] for k in range(len(splits))]


@dataclass(frozen=True)
class SplitScore:
    r: float  # against the filmed mouth
    r_env: float  # against the driving speech's envelope, at its best lag


def split_scores(c: ev.TuningClip, mouth: Mouth, v: Variant, offset: int | None) -> list[SplitScore]:
    """One score per split: r at lag 0 (offset None), or with the filmed mouth moved by `offset` and EXTRA_SHIFTS."""
    out = []
    for avatar, drive in ev.tuning_splits(len(c.filmed)):
        m = mouth(c, avatar, drive, v)
        frames = np.arange(drive.start, drive.start + len(m))
        r_env = ev.lagged_r(m, ev.envelope(ev.audio_of(c.audio, drive), len(m)))[0]
        out.append(SplitScore(filmed_r(m, c.filmed, frames, offset), r_env))
    return out


def filmed_r(mouth: np.ndarray, filmed: np.ndarray, frames: np.ndarray, offset: int | None) -> float:
    if offset is None:
        return ev.pearson(mouth, filmed[frames])
    shifted = []
    for k in EXTRA_SHIFTS:
        idx = frames + offset + k
        ok = (idx >= 0) & (idx < len(filmed))
        shifted.append(ev.pearson(mouth[ok], filmed[idx[ok]]))
    return float(np.mean(shifted))


def as_clip(arg: str) -> ev.Clip:
    """A path where the argument looks like one (a folder or a suffix), else a shared clip's name."""
    return Path(arg) if "/" in arg or Path(arg).suffix else arg


def clip_label(clip: ev.Clip) -> str:
    return clip.stem if isinstance(clip, Path) else clip


def existing_clips(ap: argparse.ArgumentParser, args: list[str]) -> list[ev.Clip]:
    """The clips the arguments name (as_clip), or the parser's error (exit 2) for any not on disk."""
    clips = [as_clip(a) for a in args]
    missing = [str(ev.clip_path(c)) for c in clips if not ev.clip_path(c).is_file()]
    if missing:
        ap.error(f"no such clip: {', '.join(missing)}")
    return clips


Groups = dict[str, tuple[list[SplitScore], list[SplitScore]]]  # group -> (base, variant) scores


def group_summaries(groups: Groups, with_env: bool, names: tuple[str, str]) -> list[str]:
    """A summary per group that has splits and, where two have, one over all of them."""
    given = {group: scores for group, scores in groups.items() if scores[0]}
    lines = [summary(group, b, n, with_env, names) for group, (b, n) in given.items()]
    if len(given) > 1:
        lines.append(summary("all", [s for b, _ in given.values() for s in b], [s for _, n in given.values() for s in n],
                             with_env, names))
    return lines


def summary(label: str, base: list[SplitScore], new: list[SplitScore], with_env: bool,
            names: tuple[str, str] = ("shipped", "variant")) -> str:
    b, n = np.array([s.r for s in base]), np.array([s.r for s in new])
    d = n - b
    line = (f"{label}: mean r over {len(d)} splits: {names[0]} {b.mean():.3f}, {names[1]} {n.mean():.3f} ({d.mean():+.3f}); "
            f"better/same/worse by {SAME}: {(d > SAME).sum()}/{(abs(d) <= SAME).sum()}/{(d < -SAME).sum()}, "
            f"worst {d.min():+.3f}")
    if with_env:
        line += (f"; r_env {names[0]} {np.mean([s.r_env for s in base]):.3f}, "
                 f"{names[1]} {np.mean([s.r_env for s in new]):.3f}")
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=list(ev.GROUND_TRUTH),
                    help="shared ground-truth clips by name, or paths to talking clips (default: the four tuning clips)")
    ap.add_argument("--render", action="store_true", help="score the rendered frames, not the target mouth")
    ap.add_argument("--detector", choices=("facemesh", "dlib"), default="dlib")
    ap.add_argument("--offsets-out", action="store_true")
    ap.add_argument("--spread", choices=("share", "rank", "choice"), default=SHIPPED_VARIANT.spread)
    ap.add_argument("--range-db", type=float, default=SHIPPED.range_db)
    ap.add_argument("--vowel", type=float, default=SHIPPED.vowel_weight)
    ap.add_argument("--hold", type=int, default=SHIPPED.hold)
    ap.add_argument("--release", type=Path, metavar="DIR",
                    help="another checkout (its root): its engine, rendered without the soundtrack, against this one's")
    args = ap.parse_args(argv)
    if args.release is not None:
        if not (args.release / "service" / "musetalk_server" / "engines" / "lite").is_dir():
            ap.error(f"--release: no lite engine under {args.release}/service/musetalk_server")
        if args.detector != "dlib":
            ap.error("--release reads the renders with dlib (the release renders in its own process)")
        args.render = True
    clips = existing_clips(ap, args.clips)
    measure = ev.measure_by(args.detector)
    variant = Variant(GenericMapping(args.range_db, args.vowel, args.hold), args.spread)
    # The tuning clips apart from the rest: what holds on clips nothing was chosen on is what counts.
    groups: Groups = {TUNING: ([], []), OTHERS: ([], [])}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        mouth: Mouth = Rendered(measure, Path(tmp)) if args.render else target
        release = None if args.release is None else Release(args.release.resolve(), Path(tmp))
        # With --release this checkout, as the options say, is the base and the release the variant.
        names = ("shipped", "variant") if release is None else ("this checkout", "release")
        for clip in clips:
            t0 = time.perf_counter()
            c = ev.tuning_clip(clip, measure, keep_frames=args.render)
            offset = ev.lagged_r(c.filmed, ev.envelope(c.audio, len(c.filmed)))[1] if args.offsets_out else None
            base = split_scores(c, mouth, SHIPPED_VARIANT if release is None else variant, offset)
            if release is not None:
                new = split_scores(c, release, variant, offset)
            else:
                new = base if variant == SHIPPED_VARIANT else split_scores(c, mouth, variant, offset)
            env = (f", r_env {np.mean([s.r_env for s in base]):.3f} → {np.mean([s.r_env for s in new]):.3f}"
                   if args.render else "")
            print(f"{clip_label(clip)} ({len(c.filmed)} frames, offset {offset}): "
                  f"{names[0]} {np.mean([s.r for s in base]):.3f}, {names[1]} {np.mean([s.r for s in new]):.3f}"
                  f"{env} [{time.perf_counter() - t0:.0f} s]", flush=True)
            b, n = groups[TUNING if clip in ev.GROUND_TRUTH else OTHERS]
            b += base
            n += new
    mode = "rendered" if args.render else "target"
    # Which engine was measured: from a worktree, the venv's editable install may be another checkout's.
    print(f"\n{mode} mouth, {args.detector}, {'offsets out' if args.offsets_out else 'as filmed'}; "
          f"variant: {ev.describe_mapping(variant.mapping)}, spread {variant.spread}; "
          f"engine from {Path(musetalk_server.__file__).parent}"
          + ("" if release is None else f"; release from {release.root}, without the soundtrack"))
    print("\n".join(group_summaries(groups, args.render, names)))
    print(f"[{time.perf_counter() - started:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
