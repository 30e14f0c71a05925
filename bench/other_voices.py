"""The lite engine with voices that are not the avatar's own (issue 13: other voices and languages).

Two questions, on each ground-truth clip's avatar (its first half, as in lipsync_eval.py):

- **driven**: the avatar, with its own soundtrack, driven by other people's speech (English
  `mt_eng.wav` (first 20 s), `vr_audio1.wav`, `st_RD_Radio31_000.wav`; Chinese `mt_yongen.wav`).
  There is no filmed mouth for that audio, so: r_env (the mouth against the driving speech's
  envelope) and the share of its pauses with the mouth shut.
- **voice-over** (`--voice-over`): the avatar's soundtrack replaced by someone else's speech (looped
  to its length), driven by the clip's own second half as in lipsync_eval. Whatever the engine
  learns from a soundtrack (the spread) is then learned from the wrong voice;
  the run with no soundtrack at all is the baseline it must not fall under.

`--vowel W` runs the generic mapping with vowel weight W instead of the shipped one.

    python -m bench.other_voices [--voice-over] [--vowel 0.9] [--clips ...] [--write-docs]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import lipsync_eval as ev
from bench.doc_blocks import LITE_ENGINE, check_block, measured_on, write_block
from musetalk_server.engines.lite.shape import SHIPPED, GenericMapping
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count

VOICES = {"mt_eng_20s": ("mt_eng.wav", 20.0), "vr_audio1": ("vr_audio1.wav", None),
          "radio": ("st_RD_Radio31_000.wav", None), "yongen (zh)": ("mt_yongen.wav", None)}


def voices() -> dict[str, np.ndarray]:
    out = {}
    for name, (file, seconds) in VOICES.items():
        audio = decode_audio(ev.MEDIA / file)
        out[name] = audio[: int(seconds * SAMPLE_RATE)] if seconds else audio
    return out


def driven(engine: ev.Engine, clips: list[str], work: Path, out: Path, emit: Callable[[str], None]) -> list[float]:
    emit("| avatar | driving voice | r_env (lag) | shut in pauses | spread |")
    emit("|---|---|---|---|---|")
    rs = []
    others = voices()
    for clip in clips:
        for name, audio in others.items():
            r = ev.evaluate_cross(engine, clip, audio, name.split()[0], out, work)
            shut = "–" if r.closed_in_silence is None else f"{r.closed_in_silence:.3f} ({r.silent_frames})"
            emit(f"| {clip} | {name} | {r.r_env:.3f} ({r.lag:+d}) | {shut} | {r.spread} |")
            rs.append(r.r_env)
    return rs


def voice_over(engine: ev.Engine, clips: list[str], work: Path, out: Path,
               emit: Callable[[str], None]) -> tuple[list[float], list[float]]:
    """(r_gt, r_env) of each voice-over avatar less those of the same avatar with no soundtrack."""
    emit("| avatar | its soundtrack | r_gt | r_env | spread (own r: share→rank) |")
    emit("|---|---|---|---|---|")
    gt, env = [], []
    others = voices()
    for clip in clips:
        frames, audio = ev.load_clip(clip)
        first, second, drive, own = ev.halves(frames, audio)
        filmed = ev.FACEMESH.read(second[:frame_count(len(drive), ev.FPS)])
        none = ev.score(engine, clip, first, drive, "none", filmed, out, work, None)
        emit(f"| {clip} | none | {none.r_gt} | {none.r_env} | – |")
        for name, soundtrack in ({"own": own} | others).items():
            fake = soundtrack if name == "own" else np.resize(soundtrack, len(own)).astype(np.float32)
            r = ev.score(engine, clip, first, drive, f"vo_{name.split()[0]}", filmed, out, work, fake)
            emit(f"| {clip} | {name} | {r.r_gt} | {r.r_env} | {r.spread} |")
            if name != "own":
                gt.append((r.r_gt or 0.0) - (none.r_gt or 0.0))
                env.append(r.r_env - none.r_env)
    return gt, env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="*", default=list(ev.GROUND_TRUTH))
    ap.add_argument("--voice-over", action="store_true", help="someone else's speech as the avatar's soundtrack")
    ap.add_argument("--vowel", type=float, default=SHIPPED.vowel_weight, help="the generic mapping's vowel weight")
    ap.add_argument("--out", type=Path, default=ev.ROOT / "results" / "other_voices")
    ap.add_argument("--write-docs", action="store_true",
                    help="also write the table into docs/lite-engine.md (block other-voices or other-voices-voice-over)")
    args = ap.parse_args(argv)
    block = "other-voices-voice-over" if args.voice_over else "other-voices"
    if args.write_docs:
        check_block(LITE_ENGINE, block)
    lines: list[str] = []

    def emit(line: str) -> None:  # rows print as they are measured (a run takes minutes), and are kept for the docs
        print(line, flush=True)
        lines.append(line)

    logging.basicConfig(level=logging.WARNING)
    engine = ev.make_engine("lite", GenericMapping(vowel_weight=args.vowel))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.voice_over:
            gt, env = voice_over(engine, args.clips, Path(tmp), args.out, emit)
            emit(f"\nAgainst no soundtrack: r_gt mean {np.mean(gt):+.3f} (worst {min(gt):+.3f}), "
                 f"r_env mean {np.mean(env):+.3f} (worst {min(env):+.3f}).")
        else:
            rs = driven(engine, args.clips, Path(tmp), args.out, emit)
            emit(f"\nr_env: mean {np.mean(rs):.3f}, lowest {min(rs):.3f}.")
    if args.write_docs:
        write_block(LITE_ENGINE, block, f"*Vowel weight {args.vowel:g}. {measured_on()}.*\n\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
