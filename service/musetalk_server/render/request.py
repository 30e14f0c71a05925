"""Audio + avatar -> frames: the one render job every sink consumes (MJPEG, MP4, real time).

A job is built once, before the first byte of any response, with every check that can fail:
the avatar exists and fits the engine, the audio decodes, and it lasts at least one frame.

The frame rate is the avatar's own (its manifest's `fps`), never the serving setting: the
avatar's background was re-timed onto that clock at preprocessing, so rendering it at another
rate would play the person's motion fast or slow. `MUSETALK_FPS` sets the clock of avatars
preprocessed from now on; a mismatch is logged, and the response's X-Frame-Rate tells clients.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..avatars.cache import AvatarCache
from ..engines.base import LoadedAvatar, Renderer
from ..errors import InvalidInput
from ..media.frame_timing import SAMPLE_RATE, frame_count
from .media.audio import decode_audio

if TYPE_CHECKING:
    from ..scheduler import Ticket

__all__ = ["RenderJob", "Rendering"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderJob:
    """One request's render: the avatar, its renderer, the audio and the frames it makes."""

    avatar: LoadedAvatar
    renderer: Renderer
    audio: np.ndarray  # (S,) float32, 16 kHz mono
    fps: float  # the avatar's
    frames: int  # = frame_count(S, fps), at least 1
    mux: np.ndarray | None = None  # the upload again at the MP4's audio rate, for that sink only
    ticket: Ticket | None = None  # the device scheduler's admission, once admitted

    def render(self, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        """The frame iterator: exactly `frames` BGR frames, fewer only once `cancel` is set.

        Once admitted, each frame step takes its turn on the device and the ticket is released
        when the iterator ends."""
        frames = self.renderer.render(self.audio, self.fps, cancel)
        return self.ticket.gated(frames) if self.ticket else frames

    def admitted(self, ticket: Ticket) -> RenderJob:
        return replace(self, ticket=ticket)

    def turn(self) -> AbstractContextManager[object]:
        """A sink's per-frame work (an MP4 encode) as part of the frame's turn on the device."""
        return self.ticket.turn() if self.ticket else nullcontext()

    def observe(self, seconds: float) -> None:
        """A sink's per-frame work done off the turn (a JPEG on the pool), for the cost estimate."""
        if self.ticket:
            self.ticket.observe(seconds)

    def late(self, seconds: float) -> None:
        """A paced sink's frame left `seconds` after its place on the stream's clock."""
        if self.ticket:
            self.ticket.late(seconds)

    def release(self) -> None:
        if self.ticket:
            self.ticket.release()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        h, w = self.avatar.frames[0].shape[:2]
        return w, h

    @property
    def duration_ms(self) -> float:
        return self.audio.size / SAMPLE_RATE * 1000


class Rendering:
    """Builds render jobs over the loaded avatars."""

    def __init__(self, cache: AvatarCache, *, max_audio_seconds: float, serving_fps: float) -> None:
        self.cache, self.max_audio_seconds, self.serving_fps = cache, max_audio_seconds, serving_fps

    def open(self, avatar_id: str, audio_path: Path, *, mux_rate: int | None = None) -> RenderJob:
        """Blocking: may read the avatar from disk and decodes the audio. Call from a worker thread."""
        # 1. the avatar: exists, fits this engine, in memory
        avatar, renderer = self.cache.get(avatar_id)
        fps = avatar.fps
        if fps != self.serving_fps:
            log.info("avatar %s was preprocessed at %g fps; rendering at that rate, not MUSETALK_FPS=%g",
                     avatar_id, fps, self.serving_fps)
        # 2. the audio, 16 kHz mono; the MP4's own track is decoded again at its rate, not upsampled
        audio = decode_audio(audio_path, max_seconds=self.max_audio_seconds)
        mux = decode_audio(audio_path, rate=mux_rate) if mux_rate else None
        # 3. at least one frame
        frames = frame_count(audio.size, fps)
        if frames == 0:
            raise InvalidInput(f"audio lasts {audio.size / SAMPLE_RATE * 1000:.0f} ms, "
                               f"shorter than one frame at {fps:g} fps")
        return RenderJob(avatar, renderer, audio, fps, frames, mux)
