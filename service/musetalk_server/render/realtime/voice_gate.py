"""Utterances from a continuous microphone: the demo page's voice gate, on the server.

A WebRTC microphone sends audio all the time, silence included, where the page's socket path
sends only what its gate let through (static/js/capture.js, `VoiceGate`). This is the same gate
with the same numbers, so both transports cut a person's speech into the same utterances:
- closed, each 20 ms chunk is held in a 200 ms pre-roll; a chunk at or above GATE_OPEN_RMS
  opens the gate and the pre-roll goes first, so onsets are not clipped;
- open, every chunk is passed on; 600 ms of chunks below GATE_CLOSE_RMS close it with `end`.
Silence therefore never reaches the session: the avatar's mouth shuts with the utterance's end.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ...media.audio import PCM16_SCALE

__all__ = ["END", "GATE_CLOSE_RMS", "GATE_HANG_S", "GATE_OPEN_RMS", "GATE_PREROLL_S", "VoiceGate"]

GATE_OPEN_RMS = 0.02  # about -34 dBFS
GATE_CLOSE_RMS = 0.01
GATE_HANG_S = 0.6  # this much quiet ends the utterance
GATE_PREROLL_S = 0.2  # sent ahead of the first loud chunk
END = '{"type": "end"}'  # what the gate says when an utterance is over: the socket's `end` message


class VoiceGate:
    """Chunks of PCM16 in (any length, at `rate`); out, what the session should hear: PCM16 (bytes)
    and END (str), in order."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.open = False
        self.quiet_s = 0.0
        self._preroll: deque[bytes] = deque()
        self._preroll_s = 0.0

    def reset(self) -> None:
        """Closed, nothing held: after an `interrupt`, only new speech opens it again (the quiet tail of
        the interrupted speech must not become an utterance of its own)."""
        self.open, self.quiet_s = False, 0.0
        self._preroll.clear()
        self._preroll_s = 0.0

    def push(self, pcm: bytes) -> list[bytes | str]:
        seconds = len(pcm) / 2 / self.rate
        level = _rms(pcm)
        if not self.open:
            self._preroll.append(pcm)
            self._preroll_s += seconds
            while self._preroll_s - len(self._preroll[0]) / 2 / self.rate >= GATE_PREROLL_S - 1e-9:
                self._preroll_s -= len(self._preroll.popleft()) / 2 / self.rate
            if level < GATE_OPEN_RMS:
                return []
            self.open, self.quiet_s = True, 0.0
            held = list(self._preroll)
            self._preroll.clear()
            self._preroll_s = 0.0
            return list(held)
        self.quiet_s = self.quiet_s + seconds if level < GATE_CLOSE_RMS else 0.0
        if self.quiet_s >= GATE_HANG_S - 1e-9:
            self.open = False
            return [pcm, END]
        return [pcm]


def _rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / PCM16_SCALE
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
