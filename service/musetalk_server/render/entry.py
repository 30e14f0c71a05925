"""The one render entry: every consumer opens its render here and nowhere else.

The MJPEG stream, the MP4 batch, the async job and the real-time session (and any later
transport) call `RenderEntry.open`, or `open_async` from the event loop, which
1. checks the request (request.py): the avatar, the audio, at least one frame, before any byte;
2. admits it on the device scheduler as its kind (Busy is 429, NotReady 503), unless the
   consumer admits it later itself (an async job, when its worker starts: a queued job holds no
   device share). Paced work (a paced stream, a real-time session) is admitted or refused at
   once, before its audio is decoded, so that the refused part of a burst costs the admitted
   part nothing; other work is admitted after, so that bad audio fails before any queue;
3. returns a `Render`, the handle that owns the device ticket. The consumer leaves its `with`
   (or closes it) when the render ends, however it ends: the ticket is released then, once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path

import numpy as np

from ..device.scheduler import PACED_KINDS, DeviceScheduler, Kind, Ticket
from .request import RenderRequest, RequestChecks, SpeechRequest

__all__ = ["Render", "RenderEntry"]


class Render:
    """One render: its checked request and, once admitted, its device ticket.

    A context manager: leaving it releases the ticket exactly once (closing an unadmitted
    render does nothing). Sinks take their per-frame gate and cost reports from `ticket`."""

    def __init__(self, request: RenderRequest, scheduler: DeviceScheduler, kind: Kind, engine: str) -> None:
        self.request: RenderRequest = request
        self.kind, self.engine = kind, engine
        self.paced = kind in PACED_KINDS
        self._scheduler = scheduler
        self._ticket: Ticket | None = None
        self._lock = threading.Lock()  # a sink may close from the event loop and a worker at once
        self._closed = False

    # --- admission ----------------------------------------------------------------------------

    def admit(self) -> Render:
        """Blocking (an unpaced kind may wait in the scheduler's queue); raises Busy or NotReady."""
        self._admitted(self._scheduler.admit(self.kind, **self._facts()))
        return self

    async def admit_async(self) -> Render:
        """`admit` from the event loop; a caller cancelled while queued leaves no ticket behind."""
        self._admitted(await self._scheduler.admit_async(self.kind, **self._facts()))
        return self

    def _facts(self) -> dict:
        frames = self.request.frames if isinstance(self.request, SpeechRequest) else None
        return {"fps": self.request.fps, "frame_size": self.request.size, "engine": self.engine, "frames": frames}

    def hear(self, speech: SpeechRequest) -> None:
        """The request's audio, checked (a paced render may be admitted before it is decoded)."""
        self.request = speech
        if self._ticket is not None:
            self._ticket.frames = speech.frames  # when it will end: the Retry-After of those it refuses

    def _admitted(self, ticket: Ticket) -> None:
        with self._lock:
            closed, self._ticket = self._closed, ticket
        if closed:  # closed while it waited in the queue: give the place straight back
            ticket.release()

    @property
    def ticket(self) -> Ticket:
        if self._ticket is None:
            raise RuntimeError("this render was not admitted")
        return self._ticket

    # --- what sinks read ----------------------------------------------------------------------

    @property
    def speech(self) -> SpeechRequest:
        """The audio-driven request (every consumer but a real-time session has one)."""
        if not isinstance(self.request, SpeechRequest):
            raise TypeError("a real-time render has no audio of its own")
        return self.request

    @property
    def avatar_id(self) -> str:
        return self.request.avatar.avatar_id

    def frames(self, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """Exactly `speech.frames` BGR frames (fewer only once `cancel` is set), one device turn each."""
        s = self.speech
        return self.ticket.gated(s.renderer.render(s.audio, s.fps, cancel))

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the ticket; the first call does, any later one does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed, ticket = True, self._ticket
        if ticket is not None:
            ticket.release()

    def __enter__(self) -> Render:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RenderEntry:
    """Opens renders: checks, then admission. Built by the runtime once the engine is loaded."""

    def __init__(self, checks: RequestChecks, scheduler: DeviceScheduler, *, engine: str) -> None:
        self.checks, self.scheduler, self.engine = checks, scheduler, engine

    def open(self, avatar_id: str, kind: Kind, audio: Path | None = None, *, mux_rate: int | None = None,
             admit: bool = True) -> Render:
        """Blocking: steps 1-3 above. No `audio`: a real-time render, its audio to come."""
        render = Render(self.checks.avatar(avatar_id), self.scheduler, kind, self.engine)
        if admit and render.paced:
            render.admit()
        with _closed_on_error(render):
            if audio is not None:
                render.hear(self.checks.speech(render.request, audio, mux_rate=mux_rate))
            if admit and not render.paced:
                render.admit()
        return render

    def reopen(self, avatar_id: str, audio: np.ndarray, mux: np.ndarray | None) -> Render:
        """Blocking: an async job's render again from its saved audio (a job taken over in cluster
        mode), checked like `open`; unadmitted, as a job's worker admits it."""
        render = Render(self.checks.avatar(avatar_id), self.scheduler, "unpaced", self.engine)
        render.hear(self.checks.decoded(render.request, audio, mux))
        return render

    async def open_async(self, avatar_id: str, kind: Kind,
                         audio: AbstractAsyncContextManager[Path] | None = None, *,
                         mux_rate: int | None = None, admit: bool = True) -> Render:
        """`open` from the event loop. `audio` is the upload, held only while it is decoded."""
        target = await asyncio.to_thread(self.checks.avatar, avatar_id)
        render = Render(target, self.scheduler, kind, self.engine)
        if admit and render.paced:
            await render.admit_async()
        with _closed_on_error(render):
            if audio is not None:
                async with audio as path:
                    render.hear(await asyncio.to_thread(self.checks.speech, target, path, mux_rate=mux_rate))
            if admit and not render.paced:
                await render.admit_async()
        return render


@contextmanager
def _closed_on_error(render: Render) -> Iterator[None]:
    try:
        yield
    except BaseException:
        render.close()
        raise
