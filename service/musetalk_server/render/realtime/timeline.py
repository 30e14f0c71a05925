"""A real-time session's state machine and frame clock arithmetic: no sockets, threads or clocks.

The session's timeline is a run of output frames at F fps. `Timeline.plan` decides, one frame at
a time, what frame g is: idle, an utterance's next speaking frame, or an underrun frame. Client
messages go in through `add_audio`, `end`, `interrupt` and `configure`, at any moment.

- Audio that arrives while idle, or after an `end`, starts a new utterance (numbered 1, 2, ...);
  utterances queue behind the one being spoken.
- An utterance starts speaking once its first frame's audio and the engine's look-ahead are
  here (or its `end` is): that is the latency floor. After that a frame speaks whenever its own
  audio is here, look-ahead or not, so a late chunk costs mouth accuracy, not a stall; only
  when its own audio is missing is the frame an underrun (closed mouth, zeros, no audio used).
- Frame g carries the samples [g/F, (g+1)/F) of the timeline at the client's rate R, rounded
  cumulatively (`share`), so an utterance's speaking frames give back its PCM exactly, zero-
  padded to the frame boundary.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import InvalidInput, TooLarge
from ...media.audio import PCM16_SCALE
from ...media.frame_timing import SAMPLE_RATE, pingpong_index
from .protocol import DEFAULT_RATE, LAST, PCM_BYTES, SPEAKING, UNDERRUN
from .resample import StreamResampler

__all__ = ["IDLE", "SPEECH", "UNDERRUN_KIND", "Plan", "Timeline", "Utterance"]

IDLE, SPEECH, UNDERRUN_KIND = "idle", "speech", "underrun"


class GrowingAudio:
    """An append-only float32 buffer; `view()` stays valid while later samples are appended."""

    def __init__(self) -> None:
        self._buf = np.zeros(SAMPLE_RATE, np.float32)
        self.size = 0

    def append(self, x: np.ndarray) -> None:
        if self.size + len(x) > len(self._buf):
            grown = np.zeros(max(2 * len(self._buf), self.size + len(x)), np.float32)
            grown[:self.size] = self._buf[:self.size]
            self._buf = grown
        self._buf[self.size:self.size + len(x)] = x
        self.size += len(x)

    def view(self) -> np.ndarray:
        return self._buf[:self.size]


@dataclass
class Utterance:
    number: int
    rate: int
    first_audio_at: float  # when its first chunk arrived (monotonic seconds)
    pcm: bytearray = field(default_factory=bytearray)  # PCM16 at `rate` not yet sent
    received: int = 0  # samples at `rate`, in all
    ended: bool = False
    started: bool = False
    frames: int = 0  # speaking frames that carried its audio: the engine's frame index
    underrun: bool = False  # the previous frame was an underrun

    def __post_init__(self) -> None:
        self.audio = GrowingAudio()  # the same audio at 16 kHz, for the engine
        self.resampler = StreamResampler(self.rate)

    def add(self, pcm: bytes) -> None:
        self.pcm += pcm
        self.received += len(pcm) // PCM_BYTES
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / PCM16_SCALE
        self.audio.append(self.resampler.push(samples))

    def finish(self) -> None:
        self.ended = True
        self.audio.append(self.resampler.push(np.zeros(0, np.float32), final=True))


@dataclass(frozen=True)
class Plan:
    """What output frame `index` is."""

    index: int
    pts_ms: int
    background: int
    kind: str  # IDLE, SPEECH or UNDERRUN_KIND
    utterance: int  # 0 while idle
    flags: int
    audio: bytes  # this frame's share, PCM16 at the session's rate
    speech_index: int = -1  # the utterance frame rendered (SPEECH only)
    speech_audio: np.ndarray | None = None  # its utterance's 16 kHz audio so far (SPEECH only)
    final: bool = False  # no more audio will come for that utterance
    generation: int = 0  # interrupts before this plan
    events_before: tuple[dict[str, Any], ...] = ()
    events_after: tuple[dict[str, Any], ...] = ()
    latency_from: float | None = None  # first speaking frame: when its utterance's audio began
    rate: int = DEFAULT_RATE  # the rate of `audio`


class Timeline:
    def __init__(self, *, fps: float, backgrounds: int, lookahead_s: float, max_buffer_s: float,
                 max_utterance_s: float, rate: int = DEFAULT_RATE) -> None:
        self.fps, self.backgrounds, self.lookahead_s = fps, backgrounds, lookahead_s
        self._fps = Fraction(fps).limit_denominator(1001)
        self.max_buffer_s, self.max_utterance_s = max_buffer_s, max_utterance_s
        self.rate = rate  # the client's audio rate, in and out
        self._rate_origin = 0  # frame from which shares count at `rate`
        # The rate before the last change, for the frame planned before it: `replan` may decide
        # that frame again after a `config`, and it must keep the rate it was announced with.
        self._rate_before = (0, rate)
        self.index = 0  # the next frame to plan
        self.utterances: deque[Utterance] = deque()
        self.numbered = 0
        self.generation = 0
        self.audio_seen = False

    # --- client messages ------------------------------------------------------------------

    def configure(self, rate: int) -> int:
        """Audio at `rate` from the next frame to plan on; returns that frame's index."""
        if self.audio_seen:
            raise InvalidInput("config comes before the first audio")
        if self._rate_origin < self.index:  # frames were planned at the current rate
            self._rate_before = (self._rate_origin, self.rate)
        self.rate, self._rate_origin = rate, self.index
        return self.index

    def add_audio(self, pcm: bytes, now: float) -> None:
        """Buffer a chunk; TooLarge (and the chunk dropped) past the buffer or utterance cap."""
        self.audio_seen = True
        n = len(pcm) // PCM_BYTES
        if self.buffered_samples() + n > self.max_buffer_s * self.rate:
            raise TooLarge(f"buffered audio would exceed MUSETALK_REALTIME_MAX_BUFFER_S = {self.max_buffer_s:g} s; "
                           f"chunk of {n} samples dropped")
        u = self.utterances[-1] if self.utterances and not self.utterances[-1].ended else None
        if u is None:
            self.numbered += 1
            u = Utterance(self.numbered, self.rate, now)
            self.utterances.append(u)
        if u.received + n > self.max_utterance_s * self.rate:
            raise TooLarge(f"an utterance lasts at most {self.max_utterance_s:g} s; chunk of {n} samples dropped")
        u.add(pcm)

    def end(self) -> None:
        if self.utterances and not self.utterances[-1].ended:
            self.utterances[-1].finish()

    def interrupt(self) -> Utterance | None:
        """Drop everything buffered; returns the utterance that was speaking, if one was."""
        speaking = self.utterances[0] if self.utterances and self.utterances[0].started else None
        self.utterances.clear()
        self.generation += 1
        return speaking

    # --- the clock ------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.utterances

    def buffered_samples(self) -> int:
        return sum(len(u.pcm) // PCM_BYTES for u in self.utterances)

    def share(self, index: int) -> int:
        """Samples in frame `index` at the rate R it is at: floor((k + 1) R / F) - floor(k R / F),
        k counted from the frame where R began."""
        origin, rate = self._rate_at(index)
        k = index - origin
        num, den = rate * self._fps.denominator, self._fps.numerator
        return (k + 1) * num // den - k * num // den

    def _rate_at(self, index: int) -> tuple[int, int]:
        """(the frame the rate began at, the rate) for frame `index`."""
        return (self._rate_origin, self.rate) if index >= self._rate_origin else self._rate_before

    def plan(self) -> Plan:
        """Decide the next frame and advance."""
        g = self.index
        self.index += 1
        base: dict[str, Any] = {"index": g, "pts_ms": int(g * 1000 // self.fps),
                                "background": pingpong_index(g, self.backgrounds), "generation": self.generation,
                                "rate": self._rate_at(g)[1]}
        share = self.share(g)
        while self.utterances and self.utterances[0].ended and not self.utterances[0].started \
                and not self.utterances[0].pcm:
            self.utterances.popleft()  # an `end` that closed nothing but an empty utterance
        u = self.utterances[0] if self.utterances else None
        before: list[dict[str, Any]] = []
        if u is not None and not u.started and self._ready(u, 0):
            u.started = True
            before.append({"type": "speech_started", "utterance": u.number, "frame": g})
        if u is None or not u.started:
            return Plan(**base, kind=IDLE, utterance=0, flags=0, audio=bytes(share * PCM_BYTES))
        have = len(u.pcm) // PCM_BYTES
        if have < share and not u.ended:
            u.underrun = True
            return Plan(**base, kind=UNDERRUN_KIND, utterance=u.number, flags=SPEAKING | UNDERRUN,
                        audio=bytes(share * PCM_BYTES), events_before=tuple(before))
        if have == 0:  # ended exactly on a frame boundary after an underrun: close it with no audio
            self.utterances.popleft()
            after_end = {"type": "speech_ended", "utterance": u.number, "frame": g, "reason": "end"}
            return Plan(**base, kind=UNDERRUN_KIND, utterance=u.number, flags=SPEAKING | UNDERRUN | LAST,
                        audio=bytes(share * PCM_BYTES), events_before=tuple(before), events_after=(after_end,))
        take = min(have, share) * PCM_BYTES
        audio = bytes(u.pcm[:take]) + bytes(share * PCM_BYTES - take)
        del u.pcm[:take]
        i = u.frames
        u.frames += 1
        u.underrun = False
        after: tuple[dict[str, Any], ...] = ()
        flags = SPEAKING
        if u.ended and not u.pcm:
            flags |= LAST
            after = ({"type": "speech_ended", "utterance": u.number, "frame": g, "reason": "end"},)
            self.utterances.popleft()
        return Plan(**base, kind=SPEECH, utterance=u.number, flags=flags, audio=audio, speech_index=i,
                    speech_audio=u.audio.view(), final=u.ended, events_before=tuple(before), events_after=after,
                    latency_from=u.first_audio_at if i == 0 else None)

    def starts_now(self) -> bool:
        """An utterance waits to start and could: its first frame's audio and look-ahead are here."""
        u = self.utterances[0] if self.utterances else None
        return u is not None and not u.started and self._ready(u, 0)

    def replan(self, plan: Plan) -> Plan:
        """Decide again the idle frame just planned (nothing else has been planned since)."""
        assert plan.kind == IDLE and plan.index == self.index - 1
        self.index = plan.index
        return self.plan()

    def _ready(self, u: Utterance, i: int) -> bool:
        """Frame i's own audio and the engine's look-ahead are here, or nothing more will come."""
        need = math.ceil(((i + 1) / self.fps + self.lookahead_s) * SAMPLE_RATE - 1e-6)
        return u.ended or u.audio.size >= need
