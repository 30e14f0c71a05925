"""The MJPEG sink: a render's frames as multipart/x-mixed-replace parts, JPEG-encoded ahead.

The first frame is awaited before the response starts, so a failure up to there still gets a
status code; a failure after it ends the body with an error part, never a silent truncation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor

import numpy as np

from ...errors import MuseTalkError
from ...media.jpeg import closing_boundary, encode_jpeg, error_part, jpeg_part
from ...metrics import RenderTracker
from ..entry import Render
from . import as_render_error, reraise_as_render_error
from .thread_bridge import FrameStream, encode_ahead

__all__ = ["MjpegStream"]


class MjpegStream:
    """One render's MJPEG body. `start` it, then iterate `body()` as the response.

    The sink owns the render from here: `close` (the body's end, a failed start, a client gone,
    shutdown) ends it and releases its ticket."""

    def __init__(self, render: Render, *, pool: Executor, ahead: int, quality: int, queue_frames: int,
                 paced: bool, tracker: RenderTracker) -> None:
        self.render, self.paced, self.tracker = render, paced, tracker

        def encode(frame: np.ndarray) -> bytes:
            started = time.perf_counter()
            jpeg = encode_jpeg(frame, quality)
            render.ticket.observe(time.perf_counter() - started)
            return jpeg

        def produce(cancel: threading.Event) -> Iterator[bytes]:
            return encode_ahead(render.frames(cancel), encode, pool, ahead)

        self.frames = FrameStream(produce, maxsize=queue_frames, name=f"stream-{render.avatar_id}")
        self._closed = False
        self._parts: AsyncIterator[bytes] | None = None
        self._first = b""

    async def start(self) -> MjpegStream:
        """Run the engine until its first JPEG; raises (as a project error) if it fails first."""
        self.tracker.__enter__()
        self.frames.start()
        self._parts = aiter(self.frames)
        try:
            self._first = await anext(self._parts)
        except BaseException as e:
            self.close()
            reraise_as_render_error(e, f"stream of {self.render.avatar_id}")
        self.tracker.first_frame()
        return self

    def close(self) -> None:
        """Stop the engine, end the render and settle the metrics; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self.frames.close()
        self.render.close()
        self.tracker.__exit__(None, None, None)

    async def body(self) -> AsyncIterator[bytes]:
        assert self._parts is not None, "start() first"
        speech, ticket, sent, clock = self.render.speech, self.render.ticket, 0, time.perf_counter()
        try:
            jpeg: bytes | None = self._first
            while jpeg is not None:
                if self.paced:
                    due = clock + sent / speech.fps
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    late = time.perf_counter() - due
                    self.tracker.late(late)
                    ticket.late(late)
                yield jpeg_part(jpeg, sent, sent * 1000.0 / speech.fps)
                sent += 1
                self.tracker.frames()
                jpeg = await anext(self._parts, None)
            yield closing_boundary()
        except Exception as e:
            where = f"after {sent} of {speech.frames} frames"
            error = as_render_error(e, f"stream of {self.render.avatar_id} {where}", f"rendering failed {where}")
            assert isinstance(error, MuseTalkError)  # an Exception always maps to one
            yield error_part(error.body(), error.status)
        finally:
            self.close()

