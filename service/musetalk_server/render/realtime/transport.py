"""What a real-time session needs from whatever carries it to the client.

The session core (session.py) decides every frame and event; a transport only moves them, in
the order given. The WebSocket (api/realtime_socket.py) is one transport, WebRTC (webrtc/) is
another. A transport declares the picture it `wants` for each frame: the socket sends JPEGs, a
video encoder takes raw I420 planes. The session makes only what its transport and viewers want,
so a WebRTC session never JPEG-encodes a frame and never decodes one back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ...errors import MuseTalkError
from .timeline import Plan

__all__ = ["I420", "JPEG", "FrameFormat", "OutputFrame", "SessionClosed", "SessionTransport"]

FrameFormat = Literal["jpeg", "i420"]
JPEG: FrameFormat = "jpeg"  # the frame as a JPEG at the session's quality
I420: FrameFormat = "i420"  # the frame as I420 planes, (H * 3 / 2, W) uint8: what video encoders take


@dataclass(frozen=True)
class OutputFrame:
    """One output frame in the formats that were wanted of it (the others are None)."""

    jpeg: bytes | None = None
    i420: np.ndarray | None = None


class SessionClosed(Exception):
    """The client went away (the session then simply ends)."""


class SessionTransport(ABC):
    ready_facts: ClassVar[dict[str, Any]] = {}  # what the `ready` event adds about this transport's framing
    wants: ClassVar[frozenset[FrameFormat]] = frozenset({JPEG})  # the formats `send_frame` reads

    @abstractmethod
    async def receive(self) -> bytes | str:
        """The client's next message: PCM16 audio (bytes) or a JSON control message (str).
        Raises SessionClosed once the client is gone."""

    @abstractmethod
    async def send_event(self, event: dict[str, Any]) -> None:
        """One JSON event (`ready`, `speech_started`, `pong`, ...). SessionClosed if the client is gone."""

    @abstractmethod
    async def send_frame(self, plan: Plan, frame: OutputFrame) -> None:
        """Output frame `plan.index`: its picture (in the formats of `wants`) and its share of the audio
        (`plan.audio`, PCM16)."""

    @abstractmethod
    async def fail(self, error: MuseTalkError) -> None:
        """Tell the client why the session ends (the `error` event), then close; never raises."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the client is still there (an error while it left is no error of ours)."""
