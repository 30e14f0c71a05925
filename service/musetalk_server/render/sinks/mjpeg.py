"""The MJPEG sink: a job's frames as multipart/x-mixed-replace parts, JPEG-encoded ahead.

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
from ..request import RenderJob
from . import as_render_error, reraise_as_render_error
from .thread_bridge import FrameStream, encode_ahead

__all__ = ["MjpegStream"]


class MjpegStream:
    """One job's MJPEG body. `start` it, then iterate `body()` as the response."""

    def __init__(self, job: RenderJob, *, pool: Executor, ahead: int, quality: int, queue_frames: int,
                 paced: bool, tracker: RenderTracker) -> None:
        self.job, self.paced, self.tracker = job, paced, tracker

        def encode(frame: np.ndarray) -> bytes:
            started = time.perf_counter()
            jpeg = encode_jpeg(frame, quality)
            job.observe(time.perf_counter() - started)
            return jpeg

        def produce(cancel: threading.Event) -> Iterator[bytes]:
            return encode_ahead(job.render(cancel), encode, pool, ahead)

        self.frames = FrameStream(produce, maxsize=queue_frames, name=f"stream-{job.avatar.avatar_id}")
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
            reraise_as_render_error(e, f"stream of {self.job.avatar.avatar_id}")
        self.tracker.first_frame()
        return self

    def close(self) -> None:
        """Stop the engine (a client disconnect ends up here) and settle the metrics, once."""
        self.job.release()  # idempotent; the frame iterator releases it too when it ends
        if not self.frames.cancel.is_set():
            self.frames.close()
            self.tracker.__exit__(None, None, None)

    async def body(self) -> AsyncIterator[bytes]:
        assert self._parts is not None, "start() first"
        job, sent, clock = self.job, 0, time.perf_counter()
        try:
            jpeg: bytes | None = self._first
            while jpeg is not None:
                if self.paced:
                    due = clock + sent / job.fps
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    late = time.perf_counter() - due
                    self.tracker.late(late)
                    job.late(late)
                yield jpeg_part(jpeg, sent, sent * 1000.0 / job.fps)
                sent += 1
                self.tracker.frames()
                jpeg = await anext(self._parts, None)
            yield closing_boundary()
        except Exception as e:
            where = f"after {sent} of {job.frames} frames"
            error = as_render_error(e, f"stream of {job.avatar.avatar_id} {where}", f"rendering failed {where}")
            assert isinstance(error, MuseTalkError)  # an Exception always maps to one
            yield error_part(error.body())
        finally:
            self.close()

