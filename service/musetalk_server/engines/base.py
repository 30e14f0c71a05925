"""The contract between the render use cases (render/) and an engine.

An engine has two phases:
- `prepare` runs once per avatar, at preprocessing time (inline in the service, or in a
  Kubernetes Job). It receives the normalised frames and their landmarks and writes its own
  artifacts into a folder of the staged avatar.
- `open` loads those artifacts into a `Renderer`, which turns 16 kHz mono audio into frames.
  `render` is a generator: it yields frames as soon as they exist, so the stream can start
  before the audio has been processed in full. `session` opens a `FrameSession`: the same
  rendering, fed with audio as it arrives (the real-time WebSocket's source of frames).

Engines never touch HTTP, never pick their device and never read the environment.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["AvatarFrames", "LoadedAvatar", "Engine", "Renderer", "FrameSession"]


@dataclass(frozen=True)
class AvatarFrames:
    """What preprocessing hands an engine: the normalised timeline and its faces."""

    frames: Sequence[np.ndarray]  # N x (H, W, 3) uint8 BGR, one per output-rate tick
    landmarks: np.ndarray  # (N, 478, 2) float32 FaceMesh points in image pixels
    fps: float
    # The video's own soundtrack, (S,) float32 16 kHz mono from its first frame; None for a
    # still or a silent video. An engine may learn how this person's mouth follows their voice.
    audio: np.ndarray | None = None


@dataclass
class LoadedAvatar:
    """A stored avatar, read back from disk. The store knows its layout and hands the engine the
    one folder that is the engine's own, so engines never learn the avatar format."""

    avatar_id: str
    path: Path
    manifest: dict[str, Any]
    frames: list[np.ndarray]  # N x (H, W, 3) uint8 BGR
    landmarks: np.ndarray  # (N, 478, 2) float32
    engine_dir: Path  # what `Engine.prepare` wrote, for `Engine.open` to read
    cache: dict[str, Any] = field(default_factory=dict)  # per-engine state, filled by `open`

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])


class FrameSession(ABC):
    """Incremental rendering for one live session: frames from audio that is still arriving.

    Utterance frame i covers the utterance's audio [i/fps, (i+1)/fps), as output frame i of
    `Renderer.render` does; the caller picks its background frame (a live session's background
    runs on through speech and idle). Calls come from one thread, utterance frames in order.
    """

    render_s: float = 0.015  # a frame is decided this long before it is due: time to render and JPEG it

    @property
    @abstractmethod
    def lookahead_s(self) -> float:
        """Audio past the end of frame i's own window that frame i needs to render as in batch."""

    @abstractmethod
    def speech_frame(self, utterance: int, i: int, background: int, audio: np.ndarray, final: bool) -> np.ndarray:
        """Utterance frame i on avatar frame `background`, full BGR.

        `audio` holds the utterance's 16 kHz samples received so far (it only grows, and covers
        frame i plus `lookahead_s` unless `final`); `final` means no more will come, the rest is
        silence. A new `utterance` number starts afresh.
        """

    @abstractmethod
    def idle_frame(self, background: int) -> np.ndarray:
        """Avatar frame `background` with the mouth closed and still: the same for every call."""


class Renderer(ABC):
    """Turns audio into frames for one avatar. One instance may serve several requests."""

    def session(self, fps: float) -> FrameSession:
        """A `FrameSession` over this renderer at `fps`; one per live session."""
        raise NotImplementedError(f"{type(self).__name__} has no incremental rendering")

    @abstractmethod
    def render(
        self,
        audio: np.ndarray,  # (S,) float32 in [-1, 1], 16 kHz mono
        fps: float,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield exactly `media.frame_timing.frame_count(len(audio), fps)` full BGR frames.

        Output frame i shows avatar frame `pingpong_index(i, N)` with the mouth replaced.
        Stops early, without error, once `cancel` is set.
        """


class Engine(ABC):
    name: ClassVar[str]
    artifact_version: ClassVar[int]  # bump when the on-disk artifacts change meaning

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Health facts: at least {"loaded": bool, "device": str}; may add e.g. "blend_mask"."""

    @abstractmethod
    def prepare(self, avatar: AvatarFrames, bbox_shift: int, out_dir: Path) -> dict[str, Any]:
        """Write per-avatar artifacts into `out_dir` (empty, inside the staged avatar).

        Returns JSON-serialisable facts for the avatar's manifest (`info.engine_info`),
        e.g. face box statistics.
        """

    @abstractmethod
    def open(self, avatar: LoadedAvatar) -> Renderer:
        """Load this engine's artifacts for `avatar`. Raise AvatarEngineMismatch if they don't fit."""
