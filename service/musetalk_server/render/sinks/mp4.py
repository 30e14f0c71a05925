"""The MP4 sink: every frame of a render into an H.264 + AAC file, its mux audio as the sound.

The sink never ends the render: its opener does (a batch route's `with`, an async job's worker)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from ...disk.faults import disk_writes
from ...errors import RenderError
from ...media.mp4 import Mp4Writer
from ...metrics import RenderTracker
from ..entry import Render
from . import reraise_as_render_error

__all__ = ["write_mp4", "render_mp4_file"]

_DISCONNECT_POLL_S = 0.25  # how often a waiting request asks whether its client is still there


def write_mp4(render: Render, out: Path, *, audio_rate: int, cancel: threading.Event | None = None,
              on_frame: Callable[[int], None] | None = None) -> int:
    """Blocking: render into `out`. Returns the frames written (all of them unless cancelled).

    `on_frame(written)` is called after each frame (an async job's progress)."""
    speech = render.speech
    assert speech.mux is not None, "open the render with mux_rate for an MP4"
    width, height = speech.size
    writer = Mp4Writer(out, fps=speech.fps, width=width, height=height, audio=speech.mux, audio_rate=audio_rate)
    written = 0
    try:
        for frame in render.frames(cancel):
            with render.ticket.turn():  # the encode is part of the frame's turn on the device
                writer.write(frame)
            written += 1
            if on_frame is not None:
                on_frame(written)
    except BaseException:
        writer.abort()
        raise
    if cancel is not None and cancel.is_set():
        # Not closed: closing encodes the soundtrack to its end, seconds of AAC for a long one,
        # for a file that is removed anyway. A cancel is done within the frame it was seen at.
        writer.abort()
        return written
    writer.close()
    if written != speech.frames:
        raise RenderError(f"engine produced {written} frames, expected {speech.frames}")
    return written


async def render_mp4_file(render: Render, out_dir: Path, *, audio_rate: int, tracker: RenderTracker,
                          gone: Callable[[], Awaitable[bool]]) -> Path:
    """Render into a new file under `out_dir` on a worker thread; stop if `gone()` turns true.

    Returns the finished file; on any failure it is removed and a project error raised.
    """
    with disk_writes("the MP4"):
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{render.avatar_id}-", suffix=".mp4", dir=out_dir)
    os.close(fd)  # PyAV opens the file by name
    out, cancel = Path(name), threading.Event()
    with tracker:
        try:
            task = asyncio.ensure_future(asyncio.to_thread(write_mp4, render, out, audio_rate=audio_rate, cancel=cancel))
            with disk_writes("the MP4"):
                while not task.done():
                    done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
                    if not done and await gone():
                        cancel.set()
                tracker.frames(task.result())
        except BaseException as e:
            cancel.set()  # cancelled itself (shutdown): the worker stops before its next frame
            out.unlink(missing_ok=True)
            reraise_as_render_error(e, f"batch of {render.avatar_id}")
    return out
