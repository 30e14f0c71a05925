"""The real-time session core: the receive loop, the frame clock, the render thread.

It knows nothing of sockets: a `SessionTransport` (transport.py) carries messages in and frames
and events out, so every transport runs this same session.

1. The receive loop applies client messages to the `Timeline` as they come (an `interrupt`
   is applied the moment it is read, whatever is buffered).
2. The clock runs on wall time: frame g is decided the engine's `render_s` before t0 + g/F, rendered
   and put in the formats its sinks want (a JPEG for the socket, I420 planes for a video
   encoder; transport.py) on the session's own worker thread, then sent at t0 + g/F. An idle
   frame whose utterance became ready meanwhile is decided again at t0 + g/F, so speech starts
   up to `render_s` sooner, at the cost of that one frame leaving a render late. Idle frames
   come from a per-avatar cache (one per background frame and format), so they cost a lookup.
   Besides its transport, a session sends every frame to the sinks `attach`ed to it (WebRTC
   viewers of a session fed over the socket: webrtc/broadcast.py).
3. Any end (client gone, error, timeout) cancels both loops; the worker finishes at most the
   frame it is on, so the engine is free again within one frame's render time. The render (and
   its device ticket) belongs to whoever opened it: the session never closes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ...engines.base import FrameSession, Renderer
from ...errors import MuseTalkError, SessionTimeout, TooLarge
from ...media.i420 import to_i420
from ...media.jpeg import encode_jpeg
from ..entry import Render
from .protocol import DEFAULT_RATE, check_pcm, error_event, parse_text
from .timeline import IDLE, SPEECH, UNDERRUN_KIND, Plan, Timeline
from .transport import I420, JPEG, FrameFormat, OutputFrame, SessionClosed, SessionTransport

__all__ = ["FrameSink", "IdleFrames", "RealtimeSession", "SessionConfig", "SessionObserver", "observer_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionConfig:
    jpeg_quality: int
    idle_timeout_s: float
    max_buffer_s: float
    max_session_s: float
    max_utterance_s: float


class SessionObserver:
    """What a session reports as it goes (the service wires it to Prometheus; the default drops it)."""

    def frame(self, kind: str, lateness_s: float) -> None: ...
    def first_speech(self, latency_s: float) -> None: ...
    def underrun(self) -> None: ...
    def interrupt(self) -> None: ...


class FrameSink(Protocol):
    """Whatever takes a session's frames: its transport, and any sink attached to it."""

    @property
    def wants(self) -> frozenset[FrameFormat]: ...
    async def send_frame(self, plan: Plan, frame: OutputFrame) -> None: ...


class IdleFrames:
    """Idle frames, one per (renderer, JPEG quality, background frame), in the formats asked so far,
    shared by sessions.

    An idle frame is the same for every session of an avatar, so each is rendered and encoded
    once per format, the first time a session shows it; from then on an idle frame is a dict
    lookup. An I420 frame of a 512² avatar holds 384 KiB, a 720p one 1.3 MiB, per background frame.
    """

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[Renderer, dict[tuple[int, int], OutputFrame]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, renderer: Renderer, quality: int, background: int) -> OutputFrame | None:
        with self._lock:
            return self._cache.get(renderer, {}).get((quality, background))

    def put(self, renderer: Renderer, quality: int, background: int, frame: OutputFrame) -> None:
        """Adds the formats `frame` has to those cached."""
        with self._lock:
            frames = self._cache.setdefault(renderer, {})
            old = frames.get((quality, background)) or OutputFrame()
            frames[(quality, background)] = OutputFrame(jpeg=frame.jpeg if frame.jpeg is not None else old.jpeg,
                                                        i420=frame.i420 if frame.i420 is not None else old.i420)


def _has(frame: OutputFrame, formats: frozenset[FrameFormat]) -> bool:
    return (JPEG not in formats or frame.jpeg is not None) and (I420 not in formats or frame.i420 is not None)


class RealtimeSession:
    """One live session over an admitted real-time `render` (entry.py), carried by `transport`."""

    def __init__(self, transport: SessionTransport, render: Render, *, config: SessionConfig, idle: IdleFrames,
                 sample_rate: int = DEFAULT_RATE, observer: SessionObserver | None = None,
                 name: str = "realtime", ready: dict[str, Any] | None = None) -> None:
        self.transport, self.config, self.idle = transport, config, idle
        self.ready_extra = ready or {}  # what the `ready` event adds about this session (its id, a viewer token)
        self.sinks: list[FrameSink] = []  # attached besides the transport
        self.sample_rate = sample_rate  # the client's audio rate from frame 0 (a `config` may change it)
        request = render.request
        self.renderer, self.fps, self.size = request.renderer, request.fps, request.size
        self.backgrounds = len(request.avatar.frames)
        self.turn = render.ticket.frame_step  # the device scheduler's per-frame gate
        self.observer = observer or SessionObserver()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.frames: FrameSession  # both made in `run`, before either loop starts
        self.timeline: Timeline
        self._send_lock = asyncio.Lock()  # events and frames leave in the order they were decided
        self._spoken: dict[int, int] = {}  # utterance -> its last speaking frame sent
        self._previous = IDLE
        self._stopped = asyncio.Event()
        self.last_activity = time.monotonic()

    # --- entry ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the session until it ends; tells the client why on any failure."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.open_frames()
            c = self.config
            self.timeline = Timeline(fps=self.fps, backgrounds=self.backgrounds, lookahead_s=self.frames.lookahead_s,
                                     max_buffer_s=c.max_buffer_s, max_utterance_s=c.max_utterance_s,
                                     rate=self.sample_rate)
            width, height = self.size
            await self.send_event({"type": "ready", "fps": self.fps, "width": width, "height": height,
                                   "sample_rate": self.timeline.rate, **self.transport.ready_facts,
                                   **self.ready_extra})
            tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._clock()),
                     asyncio.create_task(self._until_stopped())]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except SessionClosed:
            pass
        except MuseTalkError as e:
            await self.fail(e)
        except Exception:
            if not self.transport.connected:
                return  # the client left while a frame was going out
            log.exception("real-time session failed")
            await self.fail(MuseTalkError("the session failed; the server log has the details"))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The worker ends after the frame it is on, without the event loop waiting for it.
            self.worker.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """End the session from outside (a DELETE of its resource, shutdown), as if its client left."""
        self._stopped.set()

    async def _until_stopped(self) -> None:
        await self._stopped.wait()
        raise SessionClosed("stopped")

    async def open_frames(self) -> None:
        """The engine's incremental rendering for this session (`run` opens it unless a caller did
        already, to fail before it answers)."""
        if not hasattr(self, "frames"):
            self.frames = await asyncio.get_running_loop().run_in_executor(self.worker, self.renderer.session,
                                                                            self.fps)

    async def fail(self, error: MuseTalkError) -> None:
        async with self._send_lock:
            await self.transport.fail(error)

    def attach(self, sink: FrameSink) -> None:
        """Send every later frame to `sink` too (from the next frame decided on)."""
        self.sinks.append(sink)

    def detach(self, sink: FrameSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    @property
    def wants(self) -> frozenset[FrameFormat]:
        return self.transport.wants.union(*(sink.wants for sink in self.sinks))

    # --- sending --------------------------------------------------------------------------

    async def send_event(self, body: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.transport.send_event(body)

    async def _send_frame(self, plan: Plan, frame: OutputFrame) -> None:
        async with self._send_lock:
            for event in plan.events_before:
                await self.transport.send_event(event)
            await self.transport.send_frame(plan, frame)
            for sink in list(self.sinks):
                if _has(frame, sink.wants):  # else it was attached while this frame rendered: from the next
                    await sink.send_frame(plan, frame)
            for event in plan.events_after:
                await self.transport.send_event(event)

    # --- the two loops --------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await self.transport.receive()
            self.last_activity = time.monotonic()
            if isinstance(message, bytes):
                await self._audio(message)
            else:
                await self._control(message)

    async def _audio(self, data: bytes) -> None:
        check_pcm(data)
        if not data:
            return
        try:
            self.timeline.add_audio(data, time.monotonic())
        except TooLarge as e:  # the chunk is dropped; the session goes on
            await self.send_event(error_event(e))

    async def _control(self, text: str) -> None:
        control = parse_text(text)
        t = self.timeline
        if control.type == "ping":
            await self.send_event({"type": "pong"})
        elif control.type == "config":
            assert control.sample_rate is not None
            first = t.configure(control.sample_rate)
            # Frames before `first` may still be on their way at the old rate; the client needs
            # the index to cut its audio stream at the right place.
            await self.send_event({"type": "config_applied", "sample_rate": control.sample_rate, "frame": first})
        elif control.type == "end":
            t.end()
        elif control.type == "interrupt":
            speaking = t.interrupt()
            self.observer.interrupt()
            if speaking is not None and speaking.number in self._spoken:
                await self.send_event({"type": "speech_ended", "utterance": speaking.number,
                                      "frame": self._spoken[speaking.number], "reason": "interrupt"})

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        t = self.timeline
        start = loop.time()
        while True:
            due = start + t.index / self.fps
            await asyncio.sleep(max(0.0, due - self.frames.render_s - loop.time()))
            self._check_limits(loop.time() - start)
            plan = t.plan()
            frame = await self._frame(plan)
            await asyncio.sleep(max(0.0, due - loop.time()))
            if plan.kind == IDLE and t.starts_now():
                # Speech became ready after this idle frame was decided: start it on this frame
                # rather than the next (a render's worth late, not a frame period).
                plan = t.replan(plan)
                frame = await self._frame(plan)
            if plan.kind != IDLE and plan.generation != t.generation:
                # An interrupt came while this frame rendered: the next frame is idle.
                plan = replace(plan, kind=IDLE, utterance=0, flags=0, audio=bytes(len(plan.audio)),
                               events_before=(), events_after=(), latency_from=None)
                frame = await self._frame(plan)
            await self._send_frame(plan, frame)
            self._sent(plan, loop.time() - due)

    def _sent(self, plan: Plan, lateness: float) -> None:
        self.observer.frame(plan.kind, lateness)
        if plan.latency_from is not None:
            self.observer.first_speech(time.monotonic() - plan.latency_from)
        if plan.kind == UNDERRUN_KIND and self._previous != UNDERRUN_KIND:
            self.observer.underrun()  # the first frame of a run of underruns
        self._previous = plan.kind
        if plan.kind != IDLE:
            self.last_activity = time.monotonic()
            self._spoken[plan.utterance] = plan.index

    def _check_limits(self, elapsed: float) -> None:
        c = self.config
        if elapsed >= c.max_session_s:
            raise SessionTimeout(f"the session reached MUSETALK_REALTIME_MAX_SESSION_S = {c.max_session_s:g} s")
        if self.timeline.idle and time.monotonic() - self.last_activity >= c.idle_timeout_s:
            raise SessionTimeout(f"no message for MUSETALK_REALTIME_IDLE_TIMEOUT_S = {c.idle_timeout_s:g} s")

    async def _frame(self, plan: Plan) -> OutputFrame:
        wants = self.wants
        if plan.kind != SPEECH:
            cached = self.idle.get(self.renderer, self.config.jpeg_quality, plan.background)
            if cached is not None and _has(cached, wants):
                return cached
        return await asyncio.get_running_loop().run_in_executor(self.worker, self._render, plan, wants)

    def _render(self, plan: Plan, wants: frozenset[FrameFormat]) -> OutputFrame:
        """On the worker thread: the frame, in the formats wanted."""
        q = self.config.jpeg_quality
        with self.turn():
            if plan.kind == SPEECH:
                assert plan.speech_audio is not None
                image = self.frames.speech_frame(plan.utterance, plan.speech_index, plan.background,
                                                 plan.speech_audio, plan.final)
            else:
                image = self.frames.idle_frame(plan.background)
            frame = OutputFrame(jpeg=encode_jpeg(image, q) if JPEG in wants else None,
                                i420=to_i420(image) if I420 in wants else None)
        if plan.kind != SPEECH:
            self.idle.put(self.renderer, q, plan.background, frame)
        return frame


def observer_for(metrics: Any, ticket: Any = None) -> SessionObserver:
    """A SessionObserver that counts into the service's Prometheus metrics (metrics.py) and tells
    the device scheduler's `ticket` how late frames leave (late frames stop new admissions)."""

    class _Prometheus(SessionObserver):
        def frame(self, kind: str, lateness_s: float) -> None:
            metrics.realtime_frames.labels(kind).inc()
            metrics.realtime_lateness.observe(max(lateness_s, 0.0))
            if ticket is not None:
                ticket.late(lateness_s)

        def first_speech(self, latency_s: float) -> None:
            metrics.realtime_first_speech.observe(latency_s)

        def underrun(self) -> None:
            metrics.realtime_underruns.inc()

        def interrupt(self) -> None:
            metrics.realtime_interrupts.inc()

    return _Prometheus()
