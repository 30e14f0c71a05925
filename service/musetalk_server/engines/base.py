"""The contract between the pipeline and an engine.

An engine has two phases:
- `prepare` runs once per avatar, at preprocessing time (inline in the service, or in a
  Kubernetes Job). It receives the normalised frames and their landmarks and writes its own
  artifacts into a folder of the staged avatar.
- `open` loads those artifacts into a `Renderer`, which turns 16 kHz mono audio into frames.
  `render` is a generator: it yields frames as soon as they exist, so the stream can start
  before the audio has been processed in full.

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

__all__ = ["AvatarFrames", "LoadedAvatar", "Engine", "Renderer"]


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
    """A stored avatar, read back from disk (see avatars/layout.py for the layout)."""

    avatar_id: str
    path: Path
    manifest: dict[str, Any]
    frames: list[np.ndarray]  # N x (H, W, 3) uint8 BGR
    landmarks: np.ndarray  # (N, 478, 2) float32
    cache: dict[str, Any] = field(default_factory=dict)  # per-engine state, filled by `open`

    @property
    def engine_dir(self) -> Path:
        from ..avatars.layout import ENGINE_DIR

        return self.path / ENGINE_DIR

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])


class Renderer(ABC):
    """Turns audio into frames for one avatar. One instance may serve several requests."""

    @abstractmethod
    def render(
        self,
        audio: np.ndarray,  # (S,) float32 in [-1, 1], 16 kHz mono
        fps: float,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield exactly `media.timeline.frame_count(len(audio), fps)` full BGR frames.

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
