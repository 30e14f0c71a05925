"""The lite mapping on every split of every ground-truth clip, with and without the clips' own A/V offsets.

Issue 26: changes judged on the four clips' forward split did not carry over to unseen faces.
This scores the target mouth (what the bank is asked for; no render, so a run takes seconds)
against the filmed mouth on the 24 splits `lipsync_eval.tuning_splits` gives (each clip's avatar
the first or the last 40, 50 or 60 %, driven by the rest), read by FaceMesh or dlib, two ways:

- **as filmed**: lag 0, as lipsync_eval scores a render;
- **offsets out** (`--offsets-out`): each clip's filmed mouth first moved by the lag at which it
  best follows its own speech envelope (the file's own A/V offset, as far as the envelope can
  tell: vr_face1 +3, vr_face2 0, lp_d11 +1, lp_d12 +3 frames by dlib), then r averaged over a
  further -2..+2 frames. Three of the four pictures trail their sound, so any change that delays
  the mouth wins "as filmed" here and need not on a clip whose offset goes the other way; a
  change that holds with the offsets out does not lean on them.

Variants are the spread (`--spread share|rank|choice`, the shipped per-avatar choice) and the
generic mapping's settings (`--range-db`, `--vowel`, `--hold`), each against the shipped ones:

    python -m bench.lipsync_splits [--detector dlib] [--offsets-out] [--spread rank] [--hold 0] ...
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from bench import lipsync_eval as ev
from musetalk_server.engines.lite.engine import speaking_bank
from musetalk_server.engines.lite.shape import SHIPPED, GenericMapping, ShapeStream

EXTRA_SHIFTS = (-2, -1, 0, 1, 2)  # frames, with --offsets-out: an unknown offset either way
SAME = 0.02  # a split's r moving by less than this counts as unchanged


@dataclass(frozen=True)
class Variant:
    mapping: GenericMapping = SHIPPED
    spread: str = "choice"  # "share", "rank" or "choice" (engine.speaking_bank)


def target(c: ev.TuningClip, avatar: slice, drive: slice, v: Variant) -> np.ndarray:
    """(drive frames,) the target aperture of the avatar made of `avatar`, driven by `drive`'s audio."""
    if v.spread == "choice":
        bank, _ = speaking_bank(c.landmarks[avatar], ev.audio_of(c.audio, avatar), ev.FPS, v.mapping)
    else:
        bank, _ = speaking_bank(c.landmarks[avatar], None, ev.FPS, v.mapping)
        if v.spread == "rank":
            own = ev.audio_of(c.audio, avatar)
            shapes = ShapeStream(own, ev.FPS, len(bank), bank.shape_range(), mapping=v.mapping)
            bank = bank.with_voiced(np.array([s.openness > 0 for s in shapes]))
    n = drive.stop - drive.start
    return np.array([s.aperture for s in ShapeStream(ev.audio_of(c.audio, drive), ev.FPS, n, bank.shape_range(),
                                                     mapping=v.mapping)])


def split_rs(c: ev.TuningClip, v: Variant, offset: int | None) -> list[float]:
    """r per split: at lag 0 (offset None), or with the filmed mouth moved by `offset` and EXTRA_SHIFTS."""
    rs = []
    for avatar, drive in ev.tuning_splits(len(c.filmed)):
        t = target(c, avatar, drive, v)
        if offset is None:
            rs.append(ev.pearson(t, c.filmed[drive]))
            continue
        shifted = []
        for k in EXTRA_SHIFTS:
            idx = np.arange(drive.start, drive.stop) + offset + k
            ok = (idx >= 0) & (idx < len(c.filmed))
            shifted.append(ev.pearson(t[ok], c.filmed[idx[ok]]))
        rs.append(float(np.mean(shifted)))
    return rs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", choices=("facemesh", "dlib"), default="dlib")
    ap.add_argument("--offsets-out", action="store_true")
    ap.add_argument("--spread", choices=("share", "rank", "choice"), default="choice")
    ap.add_argument("--range-db", type=float, default=SHIPPED.range_db)
    ap.add_argument("--vowel", type=float, default=SHIPPED.vowel_weight)
    ap.add_argument("--hold", type=int, default=SHIPPED.hold)
    args = ap.parse_args(argv)
    measure = ev.FACEMESH
    if args.detector == "dlib":
        from bench.dlib_mouth import CLOSED_APERTURE, DlibMouth
        measure = ev.Measure(DlibMouth().apertures, CLOSED_APERTURE)
    variant = Variant(GenericMapping(args.range_db, args.vowel, args.hold), args.spread)
    base, new = [], []
    for name in ev.GROUND_TRUTH:
        c = ev.tuning_clip(name, measure)
        offset = ev.lagged_r(c.filmed, ev.envelope(c.audio, len(c.filmed)))[1] if args.offsets_out else None
        b, n = split_rs(c, Variant(), offset), split_rs(c, variant, offset)
        print(f"{name} (offset {offset}): shipped {np.mean(b):.3f}, variant {np.mean(n):.3f}")
        base += b
        new += n
    d = np.array(new) - np.array(base)
    print(f"mean r over {len(d)} splits: shipped {np.mean(base):.3f}, variant {np.mean(new):.3f} ({d.mean():+.3f}); "
          f"better/same/worse by {SAME}: {(d > SAME).sum()}/{(abs(d) <= SAME).sum()}/{(d < -SAME).sum()}, "
          f"worst {d.min():+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
