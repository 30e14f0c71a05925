"""The WebSocket transport of a real-time session: the wire format of docs/realtime.md.

Client to server: PCM16 as binary messages, JSON control as text messages. Server to client:
JSON events as text, one binary message per frame (render/realtime/protocol.py's header, the
JPEG, the frame's PCM16), and on failure the `error` event, then a close code for it.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import MuseTalkError
from ..render.realtime.protocol import HEADER_BYTES, close_code, error_event, pack_frame
from ..render.realtime.timeline import Plan
from ..render.realtime.transport import OutputFrame, SessionClosed, SessionTransport

__all__ = ["WebSocketTransport"]


class WebSocketTransport(SessionTransport):
    ready_facts: ClassVar[dict[str, Any]] = {"header_bytes": HEADER_BYTES}

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> bytes | str:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise SessionClosed(message.get("code", 1000))
            if message.get("bytes") is not None:
                return message["bytes"]
            if message.get("text") is not None:
                return message["text"]

    async def send_event(self, event: dict[str, Any]) -> None:
        try:
            await self.ws.send_json(event)
        except WebSocketDisconnect as e:
            raise SessionClosed(e.code) from e

    async def send_frame(self, plan: Plan, frame: OutputFrame) -> None:
        assert frame.jpeg is not None  # `wants` is JPEG
        try:
            await self.ws.send_bytes(pack_frame(plan.index, plan.pts_ms, plan.utterance, plan.flags, frame.jpeg,
                                                plan.audio))
        except WebSocketDisconnect as e:
            raise SessionClosed(e.code) from e

    async def fail(self, error: MuseTalkError) -> None:
        """The `error` event, then its close code (also for a refusal before a session exists)."""
        with contextlib.suppress(Exception):
            await self.ws.send_json(error_event(error))
            await self.ws.close(code=close_code(error), reason=error.code)

    @property
    def connected(self) -> bool:
        return self.ws.client_state == WebSocketState.CONNECTED
