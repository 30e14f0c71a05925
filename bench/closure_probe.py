"""Would a /p b m/ closure detector lift the lite engine's lip sync? A probe, not a feature.

Lips shut inside speech on /p/, /b/ and /m/. The loudness-and-vowel mapping cannot see that (a
/m/ hums, a /b/ carries a voice bar), so this marks them with a phone recogniser shipped inside
a wheel (pocketsphinx's English all-phone decoder, the `eval` extra) and asks two questions on
the ground-truth clips, each both ways round (avatar from one half, driven by the other's audio):

1. Are the filmed lips shut more often on frames it calls bilabial than on other speech frames?
   (At the lag where they are most often shut: the clips' own A/V offsets differ.)
2. Does the generic mapping's target, shut (or half-shut) on those frames, follow the filmed
   aperture better? Pearson r of target against filmed, the measure `lipsync_eval.tuning_r` averages.

    .venv/bin/pip install '.[eval]' && .venv/bin/python -m bench.closure_probe
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import lipsync_eval as ev
from musetalk_server.engines.lite.engine import speaking_bank
from musetalk_server.engines.lite.shape import ShapeStream
from musetalk_server.media.frame_timing import SAMPLE_RATE

BILABIAL = ("P", "B", "M")
SPEECH_GAP = ("SIL", "+NSN+", "+SPN+")  # the decoder's silence and noise fillers
KEEP = (0.0, 0.5)  # share of the target's opening kept on a bilabial frame
LAGS = range(-1, 4)  # filmed frame t + lag against the label of frame t
FRAME_S = 0.01  # the decoder's frame


def phone_labels(audio: np.ndarray, n: int, fps: float = ev.FPS) -> list[str]:
    """The recognised phone at each video frame's midpoint."""
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as e:
        raise SystemExit("needs pocketsphinx: pip install '.[eval]'") from e
    model = Path(get_model_path()) / "en-us"
    dec = Decoder(hmm=str(model / "en-us"), allphone=str(model / "en-us-phone.lm.bin"), lw=2.0,
                  samprate=SAMPLE_RATE, loglevel="FATAL")
    dec.start_utt()
    dec.process_raw((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    dec.end_utt()
    mid = (np.arange(n) + 0.5) / fps
    labels = ["SIL"] * n
    for seg in dec.seg():
        for i in np.flatnonzero((mid >= seg.start_frame * FRAME_S) & (mid < (seg.end_frame + 1) * FRAME_S)):
            labels[i] = seg.word
    return labels


def closed_shares(labels: list[str], filmed: np.ndarray, closed: float) -> tuple[int, float, float]:
    """(lag, share of bilabial frames filmed shut, share of other speech frames filmed shut) at
    the lag where the first is largest."""
    bil = np.array([p in BILABIAL for p in labels])
    speech = np.array([p not in SPEECH_GAP for p in labels])
    rows = []
    for lag in LAGS:
        n = len(filmed) - abs(lag)
        shut = (filmed[lag:] if lag >= 0 else filmed[:lag])[:n] < closed
        b, s = (bil[:n], speech[:n]) if lag >= 0 else (bil[-lag:], speech[-lag:])
        on, off = b & s, ~b & s
        rows.append((lag, float(shut[on].mean()) if on.any() else 0.0, float(shut[off].mean()) if off.any() else 0.0))
    return max(rows, key=lambda row: row[1])


def main() -> int:
    print("| clip | split | bilabial frames | shut on them (lag) | shut on other speech | r target | "
          + " | ".join(f"r, bilabials keep {k:g}" for k in KEEP) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(KEEP))
    gains: dict[float, list[float]] = {k: [] for k in KEEP}
    for clip in ev.GROUND_TRUTH:
        c = ev.tuning_clip(clip, ev.FACEMESH)
        pts_1st, pts_2nd, audio_2nd, audio_1st = ev.halves(c.landmarks, c.audio)
        filmed_1st, filmed_2nd, _, _ = ev.halves(c.filmed, c.audio)
        for split, avatar, own, audio, filmed in (("forward", pts_1st, audio_1st, audio_2nd, filmed_2nd),
                                                  ("reversed", pts_2nd, audio_2nd, audio_1st, filmed_1st)):
            shape_range = speaking_bank(avatar, own, ev.FPS)[0].shape_range()
            target = np.array([s.aperture for s in ShapeStream(audio, ev.FPS, len(filmed), shape_range)])
            labels = phone_labels(audio, len(filmed))
            bil = np.array([p in BILABIAL for p in labels])
            lag, on, off = closed_shares(labels, filmed, ev.CLOSED_APERTURE)
            base = ev.pearson(target, filmed)
            rs = []
            for keep in KEEP:
                shut = target.copy()
                shut[bil] = shape_range.closed + keep * (shut[bil] - shape_range.closed)
                rs.append(ev.pearson(shut, filmed))
                gains[keep].append(rs[-1] - base)
            print(f"| {clip} | {split} | {int(bil.sum())} | {on:.2f} ({lag:+d}) | {off:.2f} | {base:.3f} | "
                  + " | ".join(f"{r:.3f}" for r in rs) + " |")
    print("\nmean change of r: " + ", ".join(f"keep {k:g}: {np.mean(g):+.3f} (worst {min(g):+.3f})"
                                             for k, g in gains.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
