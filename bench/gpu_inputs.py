"""Inputs for a GPU run, decoded here: the device machine has no PyAV and no MediaPipe.

Writes into OUT_DIR:
- `avatar.npz`: `frames` (N, H, W, 3) uint8 BGR, the first N frames of vr_face2.mp4 at 25 fps,
  and `points` (N, 478, 2) float32, their FaceMesh landmarks;
- `avatar720.npz`: the same for lp_s18.mp4 (1280x720), for the concurrent-streams rows;
- `speech.npy`: mt_eng.wav as 16 kHz mono float32 (60 s).

`bench/musetalk_bench.py --inputs OUT_DIR` and the `gpu` tests (MUSETALK_GPU_INPUTS=OUT_DIR) read
them instead of decoding. Usage: python -m bench.gpu_inputs OUT_DIR [--frames 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"

CLIP = "vr_face2.mp4"  # 844x844, 25 fps: the face the benchmark pastes into
CLIPS = {"avatar.npz": CLIP, "avatar720.npz": "lp_s18.mp4"}  # the second: 1280x720, streams at 720p
SPEECH = "mt_eng.wav"  # 60 s of English speech


def main() -> int:
    from musetalk_server.face.landmarks import detect_video
    from musetalk_server.media.audio import decode_audio
    from testkit.mediatools import first_frames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, clip in CLIPS.items():
        frames = first_frames(MEDIA / clip, args.frames)
        points, found = detect_video(frames)
        if not found.all():
            raise SystemExit(f"no face in {int((~found).sum())} of the first {args.frames} frames of {clip}")
        np.savez_compressed(args.out / name, frames=np.stack(frames), points=points)
    np.save(args.out / "speech.npy", decode_audio(MEDIA / SPEECH))
    sys.stdout.write(f"wrote {args.out / 'avatar.npz'} ({args.frames} frames) and {args.out / 'speech.npy'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
