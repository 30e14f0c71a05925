"""The musetalk engine fed with audio as it arrives: streaming whisper features.

Whisper's encoder attends over a whole zero-padded 30 s input, so a feature depends on audio
after it. Live, frame i's window (encoder steps up to 2i+5 at 25 fps, 80 ms past the frame's
end) is read from an encoding of a rolling window of the utterance: up to 30 s of left context
(free, the encoder always runs 1,500 positions) and `extra_lookahead_s` of audio past the
window's right edge, zeros after it. An utterance of at most 30 s that is complete before a
frame is rendered (a burst, then `end`) is encoded exactly as the batch path encodes it, so
its frames are the batch frames; in real time the difference is the future cut off, measured
on the tiny models in tests/unit/test_musetalk_live.py.
"""

from __future__ import annotations

import numpy as np
import torch

from ...media.frame_timing import SAMPLE_RATE
from ..base import FrameSession
from . import blend
from .audio import (
    SAMPLES_PER_FEATURE,
    SEGMENT_SAMPLES,
    _gather,
    encode_segment,
    feature_count,
    window_indices,
)

__all__ = ["DEFAULT_EXTRA_LOOKAHEAD_S", "MuseTalkSession"]

DEFAULT_EXTRA_LOOKAHEAD_S = 0.12  # past the window edge: 200 ms past the frame's end in all, as the study advises
SILENT_FRAME = 25  # idle tokens: the window of this frame of a silent utterance (well inside it)
RENDER_S = 0.04  # a frame is decided this long before it is due: whisper + UNet + VAE + paste + JPEG


class _Features:
    """Rolling whisper encodings of one utterance: the latest one, reused while it reaches far enough."""

    def __init__(self, engine, extra_lookahead: int) -> None:
        self.engine, self.extra = engine, extra_lookahead
        self.start = self.stop = 0  # samples [start, stop) of the utterance in the cached encoding
        self.final = False
        self.hidden: torch.Tensor | None = None  # (1500, 5, 384)
        self.encodes = 0

    def tokens(self, i: int, fps: float, audio: np.ndarray, final: bool) -> torch.Tensor:
        """(1, 50, 384) window of frame i, from an encoding that reaches past it if the audio does."""
        idx = window_indices([i], fps)  # (1, 10) encoder steps of the utterance
        want = min((int(idx.max()) + 1) * SAMPLES_PER_FEATURE + self.extra, len(audio))
        if self.hidden is None or (final and not self.final) or (not self.final and self.stop < want):
            self._encode(audio, final)
        local = idx - self.start // SAMPLES_PER_FEATURE
        local[idx >= feature_count(self.stop)] = -1  # past the audio encoded: zeros, as past the end in batch
        hidden = self.hidden
        assert hidden is not None
        return _gather(local, hidden.shape[0], lambda _segment: hidden, hidden)

    def _encode(self, audio: np.ndarray, final: bool) -> None:
        m = self.engine.models
        self.stop = len(audio)
        start = max(0, self.stop - SEGMENT_SAMPLES)
        self.start = start - start % SAMPLES_PER_FEATURE  # encoder steps stay on the utterance's grid
        self.hidden = encode_segment(audio[self.start:self.stop], m.extractor, m.whisper, self.engine.device,
                                     self.engine.dtype)  # (1500, 5, 384)
        self.final = final
        self.encodes += 1


class MuseTalkSession(FrameSession):
    """Live frames from a `MuseTalkRenderer`: one UNet pass per frame, idle faces from silent tokens."""

    render_s = RENDER_S

    def __init__(self, renderer, fps: float, extra_lookahead_s: float = DEFAULT_EXTRA_LOOKAHEAD_S) -> None:
        self.renderer, self.engine, self.fps = renderer, renderer.engine, fps
        self.extra = round(extra_lookahead_s * SAMPLE_RATE)
        # Frame i's window ends 2 video periods after the frame (upstream's right padding).
        edge = int(window_indices([0], fps).max()) + 1
        self._lookahead = edge * SAMPLES_PER_FEATURE / SAMPLE_RATE - 1 / fps + extra_lookahead_s
        self._utterance: tuple[int, _Features] | None = None
        self._silent: torch.Tensor | None = None

    @property
    def lookahead_s(self) -> float:
        return self._lookahead

    def speech_frame(self, utterance: int, i: int, background: int, audio: np.ndarray, final: bool) -> np.ndarray:
        if self._utterance is None or self._utterance[0] != utterance:
            self._utterance = (utterance, _Features(self.engine, self.extra))
        with torch.inference_mode():
            tokens = self._utterance[1].tokens(i, self.fps, np.asarray(audio, np.float32), final)
        return self._face(tokens, background)

    def idle_frame(self, background: int) -> np.ndarray:
        if self._silent is None:
            silence = np.zeros(int(2 * SILENT_FRAME / self.fps * SAMPLE_RATE), np.float32)
            with torch.inference_mode():
                self._silent = self.engine.windows(silence, self.fps)([SILENT_FRAME])
        return self._face(self._silent, background)

    def _face(self, tokens: torch.Tensor, b: int) -> np.ndarray:
        r = self.renderer
        face = self.engine.faces(tokens, r.latents[b:b + 1])[0]  # (256, 256, 3) uint8 BGR
        return blend.paste_face(r.frames[b], face, r.box(b), r.square(b), r.masks[b])
