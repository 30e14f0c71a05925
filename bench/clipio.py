"""Stand-in media readers for the bench and tests until the service's own readers are used.

Video frames are resampled to the target rate by nearest timestamp; audio goes to 16 kHz mono
through PyAV's resampler.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


def read_audio(path: Path) -> np.ndarray:
    """Whole audio track as float32 mono at 16 kHz."""
    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for res in resampler.resample(frame):
                out.append(res.to_ndarray().reshape(-1))
        for res in resampler.resample(None):
            out.append(res.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def read_frames(path: Path, fps: float) -> list[np.ndarray]:
    """BGR frames re-timed to `fps` by picking the source frame nearest each output tick."""
    stamps, frames = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            stamps.append(float(frame.pts * stream.time_base))
            frames.append(frame.to_ndarray(format="bgr24"))
    stamps_a = np.asarray(stamps) - stamps[0]
    duration = stamps_a[-1] + (stamps_a[1] - stamps_a[0] if len(stamps_a) > 1 else 1.0 / fps)
    n_out = max(1, int(np.floor(duration * fps + 1e-6)))
    ticks = np.arange(n_out) / fps
    idx = np.searchsorted(stamps_a, ticks + 0.5 / fps) - 1
    return [frames[int(i)] for i in np.clip(idx, 0, len(frames) - 1)]
