"""What a real-time session needs from whatever carries it to the client.

The session core (session.py) decides every frame and event; a transport only moves them, in
the order given. The WebSocket (api/realtime_socket.py) is one transport; another (WebRTC) is
one more subclass, in a file of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ...errors import MuseTalkError
from .timeline import Plan

__all__ = ["SessionClosed", "SessionTransport"]


class SessionClosed(Exception):
    """The client went away (the session then simply ends)."""


class SessionTransport(ABC):
    ready_facts: ClassVar[dict[str, Any]] = {}  # what the `ready` event adds about this transport's framing

    @abstractmethod
    async def receive(self) -> bytes | str:
        """The client's next message: PCM16 audio (bytes) or a JSON control message (str).
        Raises SessionClosed once the client is gone."""

    @abstractmethod
    async def send_event(self, event: dict[str, Any]) -> None:
        """One JSON event (`ready`, `speech_started`, `pong`, ...). SessionClosed if the client is gone."""

    @abstractmethod
    async def send_frame(self, plan: Plan, jpeg: bytes) -> None:
        """Output frame `plan.index`: its JPEG and its share of the audio (`plan.audio`, PCM16)."""

    @abstractmethod
    async def fail(self, error: MuseTalkError) -> None:
        """Tell the client why the session ends (the `error` event), then close; never raises."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the client is still there (an error while it left is no error of ours)."""
