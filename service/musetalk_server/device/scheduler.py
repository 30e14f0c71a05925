"""One scheduler per device: admits only what it can serve on time, orders frames by priority,
and drains on shutdown. Every render passes through it: streams, batch MP4s, real-time sessions
and preprocessing.

The admission API (for every client, the real-time sessions included)::

    ticket = scheduler.admit("paced", fps=25.0, frame_size=(512, 512), engine="lite", frames=225)
    with ticket:                                   # release() on exit
        for frame in ticket.gated(renderer.render(audio, fps, cancel)):
            ...

Renders do not call this themselves: they open through `render/entry.py`, whose handle owns
the ticket and releases it once.

`admit(kind, fps, frame_size, engine, frames=None)` returns a `Ticket` or raises:
- `Busy` (HTTP 429, code `busy`, `Retry-After: <retry_after_s>`; a real-time socket closes
  with 4429 and an `error` event carrying `error.body()`): the device cannot take it;
- `NotReady` (HTTP 503, code `not_ready`): the process is draining for shutdown.

Kinds and priorities (lower goes first):

    realtime, paced   0   admitted at once or refused at once (milliseconds, never queued)
    unpaced           1   batch MP4s and unpaced streams: wait in a bounded queue
    preprocess        2   up to MUSETALK_QUEUE_TIMEOUT_S, then Busy

**Admission of paced work** is by measured throughput. The scheduler keeps an EWMA of the
seconds one frame costs per (engine, frame size), fed as work runs (`Ticket.gated` times the
engine's step for each frame, the sinks add their encoding through `Ticket.observe`; a batching
engine reports its device time per frame through `observe_device`). A paced ticket demands
`fps x cost` device-seconds per second; it is admitted when the demand of every admitted paced
ticket, its own included, fits `REALTIME_LOAD x` the cores it can have (some headroom is kept
for the event loop, the network and jitter). Admission must hold for a burst too: many requests
at once are each admitted against the others all running, start-up included, so a paced stream
in its first `STARTUP_S` counts `STARTUP_FACTOR` times its demand (it renders its buffer ahead on
top of its clock then, while the burst's later arrivals decode their audio; a real-time session
starts on cached idle frames and counts its steady demand). The cores
it can have are `workers`, or fewer on a shared machine: on a CPU engine, `cores_free` reports
the cores this process used plus those nobody used, over the last `CPU_SAMPLE_S` or more
(cores_free.py), measured before a burst and held through it, and never taken as less than the
fair share a busy machine still gives (`FAIR_SHARE_CORES`). The costs are wall times
measured under the real load, so a busy machine also reads as a slower one and admits fewer.
On a CPU engine the process's own CPU time per frame (per megapixel, every `CPU_SAMPLE_S`) is a
second measure, which also counts what the frame steps do not (the event loop, the network);
the larger of the two counts. And whatever the estimate says, a paced frame that left more than
`LATE_GUARD_S` late in the last `LATE_WINDOW_S` refuses new paced work: the device is full. A
size never measured takes a measured size's cost scaled by pixels, else `SEED_S_PER_MEGAPIXEL`;
an empty device always takes one paced ticket, which then measures. `max_realtime`
(MUSETALK_MAX_REALTIME_STREAMS) may cap the count.

**Per-frame priority.** On an engine that renders on the CPU cores (`frame_slots` = cores),
each frame step takes one of `frame_slots` turns, and a waiting paced frame goes before any
waiting unpaced one: a long batch yields the cores between its frames, so a live viewer waits
at most one batch frame. A batching device engine (musetalk) runs its streams' frames together
instead (`frame_slots=None`): there the priority holds at admission.

**Shutdown.** `drain()` refuses new work with NotReady; `wait_idle(timeout)` waits for the
admitted work to end; `revoke()` makes every running ticket's next frame raise NotReady, so a
stream ends with its error part instead of being cut.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

from ..errors import Busy, NotReady

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["Kind", "KINDS", "PRIORITY", "DeviceScheduler", "Ticket", "REALTIME_LOAD", "SEED_S_PER_MEGAPIXEL",
           "STARTUP_S", "STARTUP_FACTOR", "PACED_KINDS", "FAIR_SHARE_CORES"]

Kind = Literal["realtime", "paced", "unpaced", "preprocess"]
PRIORITY: dict[str, int] = {"realtime": 0, "paced": 0, "unpaced": 1, "preprocess": 2}
KINDS = tuple(PRIORITY)
PRIORITY_NAMES = ("realtime", "unpaced", "preprocess")  # metric label of each priority level
PACED_KINDS = ("realtime", "paced")
REALTIME_LOAD = 0.7  # share of the workers' time paced work may claim; the rest absorbs jitter
FAIR_SHARE_CORES = 1.0  # the cores a process gets on a machine others keep busy (see `capacity`)
STARTUP_S = 1.5  # a paced ticket's start-up: its buffer rendered ahead, its first frames out
# Its demand then, in times its steady demand: its clock's frames, plus the MJPEG buffer rendered
# ahead (16 frames and the encoders', ~0.7 s of 25 fps: x1.7), plus what the single stream the
# cost was measured on did not show: the burst's own audio decoding and N new streams contending.
STARTUP_FACTOR = 2.5
SEED_S_PER_MEGAPIXEL = 0.05  # a frame never measured: ~13 ms at 512², several times lite's cost
EWMA_ALPHA = 0.05  # weight of one frame's measurement: ~20 frames, under a second of one stream
CPU_SAMPLE_S = 0.5  # how often the process's CPU time per frame is read
CPU_ALPHA = 0.3  # weight of one CPU sample
LATE_GUARD_S = 0.02  # a paced frame this late means the device is full, whatever the estimate says
LATE_WINDOW_S = 2.0  # ... for this long after
MIN_RETRY_AFTER_S = 1
T = TypeVar("T")


@dataclass(eq=False)
class Ticket:
    """One admitted render. Release it (or leave its `with`) when the work ends."""

    scheduler: DeviceScheduler
    kind: str
    fps: float
    frame_size: tuple[int, int]
    engine: str
    frames: int | None
    admitted_at: float = field(default_factory=time.monotonic)
    revoked: threading.Event = field(default_factory=threading.Event)
    released: bool = False
    _extra: float = 0.0  # sink work on the latest frame, added to the next sample

    @property
    def priority(self) -> int:
        return PRIORITY[self.kind]

    @property
    def paced(self) -> bool:
        return self.kind in PACED_KINDS

    @property
    def demand(self) -> float:
        """Device-seconds per second this ticket needs to stay on time (paced kinds), more while
        it starts."""
        steady = self.fps * self.scheduler.frame_cost(self.engine, self.frame_size)
        # A real-time session starts on idle frames (cached JPEGs) and renders nothing ahead.
        starting = self.kind == "paced" and time.monotonic() - self.admitted_at < STARTUP_S
        return steady * STARTUP_FACTOR if starting else steady

    def ends_in_s(self) -> float:
        """When a paced ticket is expected to end, from its frame count (unknown: one minute)."""
        if not self.frames:
            return 60.0
        return max(0.0, self.admitted_at + self.frames / self.fps - time.monotonic())

    def gated(self, frames: Iterator[T]) -> Iterator[T]:
        """The frame iterator, one frame step per turn, timed. The ticket's holder releases it."""
        sched = self.scheduler
        while True:
            if self.revoked.is_set():
                raise NotReady("the server is shutting down")
            with sched.frame_turn(self.priority):
                started = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                step = time.perf_counter() - started
            # One sample per frame: its engine step plus the sink's work on the frame before.
            extra, self._extra = self._extra, 0.0
            if sched.measure_frames:
                sched.observe(self.engine, self.frame_size, step + extra)
            yield frame

    def turn(self) -> _Turn:
        """One more step of this ticket's per-frame work (an MP4 sink's encode) under the gate."""
        return _Turn(self)

    def frame_step(self) -> _Turn:
        """One whole frame under the gate, measured as a frame: for a caller that renders frame by
        frame without `gated` (a real-time session, whose frames come from a FrameSession)."""
        return _Turn(self, whole_frame=True)

    def observe(self, seconds: float) -> None:
        """Add `seconds` of a sink's per-frame work (encoding) to the next frame's measured cost."""
        self._extra += seconds

    def late(self, seconds: float) -> None:
        """A paced sink's frame left `seconds` after its place on the stream's clock."""
        if seconds > LATE_GUARD_S:
            self.scheduler.last_late = time.monotonic()

    def release(self) -> None:
        self.scheduler._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _release_if_admitted(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().release()


class _Turn:
    def __init__(self, ticket: Ticket, *, whole_frame: bool = False) -> None:
        self.ticket, self.whole_frame = ticket, whole_frame
        self._gate = ticket.scheduler.frame_turn(ticket.priority)

    def __enter__(self) -> None:
        self._gate.__enter__()
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        seconds, t = time.perf_counter() - self._started, self.ticket
        if not self.whole_frame:
            t.observe(seconds)
        elif t.scheduler.measure_frames:
            t.scheduler.observe(t.engine, t.frame_size, seconds)
        self._gate.__exit__(*exc)


class _FrameTurn:
    """One frame step under the gate: a free slot, and no higher priority waiting for one."""

    def __init__(self, sched: DeviceScheduler, priority: int) -> None:
        self.sched, self.priority = sched, priority

    def __enter__(self) -> None:
        s = self.sched
        if s.frame_slots is None:
            return
        with s._cond:
            s._frame_waiting[self.priority] += 1
            try:
                while s._frame_busy >= s.frame_slots or any(s._frame_waiting[p] for p in range(self.priority)):
                    s._cond.wait()
            finally:
                s._frame_waiting[self.priority] -= 1
            s._frame_busy += 1

    def __exit__(self, *exc: object) -> None:
        s = self.sched
        if s.frame_slots is None:
            return
        with s._cond:
            s._frame_busy -= 1
            s._cond.notify_all()


class DeviceScheduler:
    """Admission, per-frame priority and drain for one device (see the module docstring)."""

    def __init__(self, *, workers: float, frame_slots: int | None, unpaced_slots: int, queue_timeout_s: float,
                 max_queue: int, max_realtime: int = 0, measure_frames: bool = True,
                 cores_free: Callable[[], float] | None = None, metrics: Metrics | None = None) -> None:
        self.workers, self.frame_slots, self.unpaced_slots = workers, frame_slots, unpaced_slots
        self.cores_free = cores_free  # None: the workers are this process's alone
        self.queue_timeout_s, self.max_queue, self.max_realtime = queue_timeout_s, max_queue, max_realtime
        self.measure_frames, self.metrics = measure_frames, metrics
        self._cond = threading.Condition()
        self._admitted: set[Ticket] = set()
        self._waiting = [0, 0, 0]  # admission queue, by priority
        self._frame_waiting = [0, 0, 0]
        self._frame_busy = 0
        self._cost: dict[tuple[str, tuple[int, int] | None], float] = {}
        self.draining = False
        self.last_late = -math.inf  # when a paced frame last left late (Ticket.late)
        self._cpu_per_mp: float | None = None  # process CPU seconds per megapixel of frames
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._cpu_pixels = 0.0  # megapixels of frames since the mark
        self._last_frame = -math.inf
        if metrics is not None:
            for p, name in enumerate(PRIORITY_NAMES):
                metrics.sched_queue.labels(name).set_function(partial(self._waiting.__getitem__, p))
            metrics.sched_load.set_function(self.load)

    # --- admission -------------------------------------------------------------------------

    def admit(self, kind: str, *, fps: float, frame_size: tuple[int, int], engine: str,
              frames: int | None = None) -> Ticket:
        """A ticket for one render, or Busy / NotReady. Paced kinds never wait; the others
        may block up to `queue_timeout_s` (call from a worker thread)."""
        if kind not in PRIORITY:
            raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
        ticket = Ticket(self, kind, float(fps), (int(frame_size[0]), int(frame_size[1])), engine, frames)
        with self._cond:
            self._check_open()
            if ticket.paced:
                self._admit_paced(ticket)
            else:
                self._admit_queued(ticket)
            self._admitted.add(ticket)
            ticket.admitted_at = time.monotonic()
        self._count("admitted", kind)
        return ticket

    async def admit_async(self, kind: str, **facts: object) -> Ticket:
        """`admit` from the event loop: paced kinds answer at once, the others wait on a thread.
        A caller cancelled while queued leaves no ticket behind."""
        if kind in PACED_KINDS:
            return self.admit(kind, **facts)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(asyncio.to_thread(self.admit, kind, **facts))  # type: ignore[arg-type]
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(_release_if_admitted)
            raise

    def _admit_paced(self, ticket: Ticket) -> None:
        paced = [t for t in self._admitted if t.paced]
        since_late = time.monotonic() - self.last_late
        if paced and since_late < LATE_WINDOW_S:
            # Lateness passes: the hint is when this refusal would lapse, not when a stream ends
            # (a live session's end is unknown, and a minute is far longer than the wait).
            self._refuse(ticket, paced, "real-time work already admitted is running late",
                         retry_s=LATE_WINDOW_S - since_late)
        if self.max_realtime and len(paced) >= self.max_realtime:
            self._refuse(ticket, paced,
                         f"{len(paced)} real-time streams, the most MUSETALK_MAX_REALTIME_STREAMS allows")
        demand = sum(t.demand for t in paced) + ticket.demand
        if paced and demand > self.capacity():
            self._refuse(ticket, paced, f"the device would need {demand:.2f} of its {self.capacity():.2f} "
                                        "device-seconds per second for real-time work")

    def _refuse(self, ticket: Ticket, paced: list[Ticket], why: str, retry_s: float | None = None) -> None:
        """Busy, with a retry hint: `retry_s`, else when the first admitted stream should end."""
        soonest = retry_s if retry_s is not None else min(t.ends_in_s() for t in paced)
        retry = max(MIN_RETRY_AFTER_S, math.ceil(soonest))
        self._count("refused", ticket.kind)
        raise Busy(f"busy: {why}; retry in {retry} s", retry_after_s=retry)

    def _admit_queued(self, ticket: Ticket) -> None:
        p = ticket.priority
        if not self._unpaced_turn(p) and sum(self._waiting) >= self.max_queue:
            self._count("refused", ticket.kind)
            raise Busy(f"busy: {self.max_queue} requests already wait", retry_after_s=self._queue_retry())
        deadline = time.monotonic() + self.queue_timeout_s
        self._waiting[p] += 1
        try:
            while not self._unpaced_turn(p):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._count("refused", ticket.kind)
                    raise Busy(f"busy: waited {self.queue_timeout_s:g} s for the device",
                               retry_after_s=self._queue_retry())
                self._cond.wait(left)
                self._check_open()
        finally:
            self._waiting[p] -= 1
            self._cond.notify_all()

    def _unpaced_turn(self, priority: int) -> bool:
        running = sum(1 for t in self._admitted if not t.paced)
        return running < self.unpaced_slots and not any(self._waiting[q] for q in range(1, priority))

    def _queue_retry(self) -> int:
        return max(MIN_RETRY_AFTER_S, math.ceil(self.queue_timeout_s))

    def _check_open(self) -> None:
        if self.draining:
            raise NotReady("the server is shutting down")

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            self._admitted.discard(ticket)
            self._cond.notify_all()

    # --- per-frame priority ------------------------------------------------------------------

    def frame_turn(self, priority: int) -> _FrameTurn:
        return _FrameTurn(self, priority)

    # --- the capacity estimate ---------------------------------------------------------------

    def capacity(self) -> float:
        """Device-seconds per second paced work may claim."""
        if self.cores_free is None:
            return self.workers * REALTIME_LOAD
        # Beside busy neighbours the kernel's fair share still gives a process that wants the CPU
        # about a core's worth of time, so a full machine takes one core's worth of paced work.
        workers = min(self.workers, max(FAIR_SHARE_CORES, self.cores_free()))
        return workers * REALTIME_LOAD

    def load(self) -> float:
        """The share of `capacity()` the admitted paced work claims, by the current estimate."""
        with self._cond:
            return sum(t.demand for t in self._admitted if t.paced) / self.capacity()

    def frame_cost(self, engine: str, size: tuple[int, int] | None) -> float:
        """Seconds one frame of this engine and size costs: measured, scaled or seeded."""
        pixels = (size[0] * size[1]) if size else 1 << 20
        cost = self._cost.get((engine, size)) or self._cost.get((engine, None))
        if cost is not None:
            by_cpu = self._cpu_per_mp * pixels / 1e6 if self._cpu_per_mp and size else 0.0
            return max(cost, by_cpu)
        same = [(s, c) for (e, s), c in self._cost.items() if e == engine and s]
        if same:
            s, c = max(same, key=lambda sc: sc[1] / (sc[0][0] * sc[0][1]))  # the costliest per pixel
            return c * pixels / (s[0] * s[1])
        return SEED_S_PER_MEGAPIXEL * pixels / 1e6

    def observe(self, engine: str, size: tuple[int, int], seconds: float) -> None:
        """One frame's measured work (wall seconds) for this engine and frame size."""
        # Under the lock: every stream and session reports from its own thread, and the CPU
        # sample (a mark, then pixels counted since) must not be reset between two lines of another's.
        with self._cond:
            now = time.monotonic()
            if now - self._last_frame > CPU_SAMPLE_S:  # idle until now: what the CPU did meanwhile was no frame's
                self._cpu_mark, self._cpu_pixels = (now, time.process_time()), 0.0
            self._last_frame = now
            self._cpu_pixels += size[0] * size[1] / 1e6
            if now - self._cpu_mark[0] >= CPU_SAMPLE_S:
                cpu = time.process_time()
                sample = (cpu - self._cpu_mark[1]) / self._cpu_pixels
                prev = self._cpu_per_mp
                self._cpu_per_mp = sample if prev is None else prev + CPU_ALPHA * (sample - prev)
                self._cpu_mark, self._cpu_pixels = (now, cpu), 0.0
            self._accumulate((engine, size), seconds)

    def observe_device(self, engine: str, frames: int, seconds: float) -> None:
        """A batching engine's device call: `frames` frames (any sizes) in `seconds`."""
        if self.metrics is not None:
            self.metrics.device_batch.observe(frames)
        if frames:
            with self._cond:
                self._accumulate((engine, None), seconds / frames)

    def _accumulate(self, key: tuple[str, tuple[int, int] | None], seconds: float) -> None:
        prev = self._cost.get(key)
        self._cost[key] = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)
        if self.metrics is not None:
            engine, size = key
            label = f"{size[0]}x{size[1]}" if size else "any"
            self.metrics.sched_frame_seconds.labels(engine, label).set(self.frame_cost(engine, size))

    def streams_capacity(self, engine: str, size: tuple[int, int], fps: float) -> int:
        """How many paced streams of this engine, size and rate the device holds, by the estimate."""
        return int(self.capacity() / (fps * self.frame_cost(engine, size)))

    # --- shutdown ----------------------------------------------------------------------------

    def drain(self) -> None:
        """Refuse new work from now on (NotReady); admitted work carries on."""
        with self._cond:
            self.draining = True
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no ticket is admitted, or `timeout_s` passed. True when idle."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._admitted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def revoke(self) -> int:
        """Make every admitted ticket's next frame raise NotReady. Returns how many."""
        with self._cond:
            for t in self._admitted:
                t.revoked.set()
            return len(self._admitted)

    @property
    def active(self) -> int:
        return len(self._admitted)

    def _count(self, what: str, kind: str) -> None:
        if self.metrics is not None:
            (self.metrics.sched_admitted if what == "admitted" else self.metrics.sched_refused).labels(kind).inc()

