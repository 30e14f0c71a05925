"""The thread bridge: a blocking frame iterator on a worker thread, read on the event loop.

The engine's generator runs on a worker thread; the event loop reads from a bounded buffer.
A slow client therefore back-pressures the engine instead of growing memory, and a client
that leaves sets the cancel event, which the engine sees before its next frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Generic, TypeVar

__all__ = ["FrameStream", "encode_ahead"]

T = TypeVar("T")
U = TypeVar("U")
_POLL_S = 0.05  # how often a blocked producer looks at the cancel flag


class FrameStream(Generic[T]):
    """Run a blocking iterator on a worker thread; iterate its items on the event loop."""

    def __init__(self, produce: Callable[[threading.Event], Iterator[T]], *, maxsize: int, name: str = "frames") -> None:
        self.cancel = threading.Event()
        self._produce = produce
        self._slots = threading.Semaphore(maxsize)
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.buffered = 0
        self.done = threading.Event()  # set once the worker has returned, for whatever reason

    def start(self) -> FrameStream[T]:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        return self

    def close(self) -> None:
        self.cancel.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "item":
                    self.buffered -= 1
                    self._slots.release()
                    yield value  # type: ignore[misc]
                elif kind == "end":
                    return
                else:
                    raise value  # type: ignore[misc]
        finally:
            self.close()

    def _run(self) -> None:
        try:
            for item in self._produce(self.cancel):
                if not self._wait_for_slot():
                    return
                self.buffered += 1
                self._post("item", item)
            self._post("end", None)
        except BaseException as e:  # handed to the event loop, which raises it there
            self._post("error", e)
        finally:
            self.done.set()

    def _wait_for_slot(self) -> bool:
        while not self._slots.acquire(timeout=_POLL_S):
            if self.cancel.is_set():
                return False
        return not self.cancel.is_set()

    def _post(self, kind: str, value: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:
            self.cancel.set()  # the loop is gone: nobody is listening any more


def encode_ahead(items: Iterator[T], encode: Callable[[T], U], pool: Executor, ahead: int) -> Iterator[U]:
    """Map `encode` over `items` on `pool`, up to `ahead` in flight, keeping the order.

    JPEG encoding releases the GIL, so this overlaps it with the engine's next frame.
    """
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(encode, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
    except Exception:
        # Frames the engine made before it failed still go out, then the error does.
        while pending:
            yield pending.popleft().result()
        raise
    while pending:
        yield pending.popleft().result()
