"""Cross-stream batching: the frames due from several streams go into one UNet + VAE call.

Each stream's renderer hands in its next chunk of frames (tokens and latents) and blocks. The
first caller to find the device free leads: it waits at most `wait_s` (a fraction of a frame
time) for the other active streams to hand in theirs, takes requests in arrival order up to
`batch_size` frames, runs the one device call, and hands every request exactly its own rows.
Rows of a batch never mix (the UNet and the VAE are per sample), so a frame equals the frame
rendered alone, to float rounding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["DeviceBatcher"]


@dataclass(eq=False)
class _Request:
    tokens: torch.Tensor  # (b, 50, 384)
    latents: torch.Tensor  # (b, 8, 32, 32)
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    faces: np.ndarray | None = None
    error: BaseException | None = None

    @property
    def frames(self) -> int:
        return int(self.latents.shape[0])


class DeviceBatcher:
    """One device call at a time, each carrying the frames of as many streams as fit."""

    def __init__(self, run: Callable[[torch.Tensor, torch.Tensor], np.ndarray], batch_size: int) -> None:
        self._run, self.batch_size = run, batch_size
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        self.streams = 0  # renders in progress: how many requests a leader may wait for
        self.calls: list[int] = []  # requests per device call, latest last (tests, benches)
        self.on_call: Callable[[int, float], None] | None = None  # (frames, seconds) of each call

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Count one render in progress while it runs."""
        with self._cond:
            self.streams += 1
        try:
            yield
        finally:
            with self._cond:
                self.streams -= 1
                self._cond.notify_all()  # a leader waiting for this stream's frames stops waiting

    def chunk(self) -> int:
        """Frames a stream should hand in at once: its share of a full batch."""
        return max(1, self.batch_size // max(1, self.streams))

    def faces(self, tokens: torch.Tensor, latents: torch.Tensor, wait_s: float = 0.0) -> np.ndarray:
        """Blocking: this request's (b, 256, 256, 3) faces, from a device call it may share."""
        request = _Request(tokens, latents, time.monotonic() + wait_s)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done.is_set():
                if not self._busy and self._pending and self._pending[0] is request and self._ready(request):
                    batch = self._take()
                    break
                self._cond.wait(self._timeout(request))
            else:
                return self._result(request)
        self._call(batch)
        return self._result(request)

    def _ready(self, head: _Request) -> bool:
        """Lead now: the batch is full, every stream has handed in, or the head waited enough."""
        frames = sum(r.frames for r in self._pending)
        return frames >= self.batch_size or len(self._pending) >= self.streams or time.monotonic() >= head.deadline

    def _timeout(self, request: _Request) -> float | None:
        left = request.deadline - time.monotonic()
        return left if left > 0 else None

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        frames = 0
        while self._pending and (not batch or frames + self._pending[0].frames <= self.batch_size):
            r = self._pending.pop(0)
            batch.append(r)
            frames += r.frames
        self._busy = True
        return batch

    def _call(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            faces = self._run(torch.cat([r.tokens for r in batch]), torch.cat([r.latents for r in batch]))
            at = 0
            for r in batch:
                r.faces, at = faces[at: at + r.frames], at + r.frames
        except BaseException as e:  # every request of the batch learns of it
            for r in batch:
                r.error = e
        seconds = time.perf_counter() - started
        with self._cond:
            self._busy = False
            self.calls.append(len(batch))
            del self.calls[:-1000]
            for r in batch:
                r.done.set()
            self._cond.notify_all()
        if self.on_call is not None:
            self.on_call(sum(r.frames for r in batch), seconds)

    @staticmethod
    def _result(request: _Request) -> np.ndarray:
        if request.error is not None:
            raise request.error
        assert request.faces is not None
        return request.faces
