"""Render a clip's splits with whichever lite engine `musetalk_server` resolves to; read them with dlib.

`bench.lipsync_splits --release DIR` runs this in a subprocess with DIR/service first on the
path, so the engine is another checkout's (an earlier release in a git worktree) while the
clips, splits and measure are this checkout's. It touches only what every release since the
lite engine began has had: `build_bank(landmarks)` and `LiteRenderer(frames, landmarks,
bank).render(audio, fps)`. That is an avatar prepared without its soundtrack: the releases
before the soundtrack was read had nothing else, and from those after it this is their
generic path.

The renders are read here, in the same process, so that only one number per frame crosses back;
the reader is dlib's (`bench/dlib_mouth.py`, which needs nothing of either checkout) or another
class with the same `apertures(frames)`, named as `module:Class`.

    PYTHONPATH=DIR/service python -m bench.release_render SPLITS.npz APERTURES.npz [MODULE:CLASS]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

DLIB_READER = "bench.dlib_mouth:DlibMouth"


def render_splits(src: Path, dst: Path, reader: str = DLIB_READER) -> None:
    """`src` (frames, landmarks, fps, splits: (K, 4) avatar start/stop, drive start/stop, and
    audio0..audio{K-1}, each split's driving audio, cut by the caller) -> `dst`: split0..split{K-1},
    the `reader`'s aperture of each split's rendered frames."""
    from musetalk_server.engines.lite.bank import build_bank
    from musetalk_server.engines.lite.engine import LiteRenderer

    module, name = reader.split(":")
    read = getattr(importlib.import_module(module), name)().apertures
    out = {}
    with np.load(src) as z:
        frames, landmarks, fps = z["frames"], z["landmarks"], float(z["fps"])
        for k, (a0, a1, d0, d1) in enumerate(z["splits"].tolist()):
            points = landmarks[a0:a1]
            renderer = LiteRenderer(list(frames[a0:a1]), points, build_bank(points))
            shown = [frame.copy() for frame in renderer.render(z[f"audio{k}"], fps)][:d1 - d0]
            out[f"split{k}"] = read(shown)
    np.savez(dst, **out)


if __name__ == "__main__":
    render_splits(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
