"""The real-time session for asyncio programs (voice-agent frameworks run on an event loop).

The same protocol and the same reader as `realtime.RealtimeSession`, over `websockets.asyncio`:

    async with await open_realtime("http://127.0.0.1:8000", "anchor", sample_rate=24000) as rt:
        await rt.send_audio(pcm16); await rt.end()
        async for item in rt: ...   # RealtimeFrame or dict events
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .errors import ClientError, error_from
from .realtime import CLOSE_WAIT_S, OPEN_TIMEOUT_S, RealtimeFrame, SessionReader, realtime_url

__all__ = ["AsyncRealtimeSession", "open_realtime"]


async def open_realtime(base_url: str, avatar_id: str, *, sample_rate: int | None = None,
                        api_key: str | None = None) -> AsyncRealtimeSession:
    """Open `WS /inference/realtime/{avatar_id}` and wait for `ready`; a refusal (an `error` event
    and its close code, or an HTTP status on the upgrade) raises ClientError."""
    headers = {"X-API-Key": api_key} if api_key else None
    try:
        ws = await connect(realtime_url(base_url, avatar_id, sample_rate), additional_headers=headers,
                           open_timeout=OPEN_TIMEOUT_S, max_size=None)
    except InvalidStatus as e:
        raise error_from(e.response.status_code, e.response.body or b"", e.response.headers.get("Retry-After")) from e
    reader = SessionReader(sample_rate)
    try:
        opening = reader.opening(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
        if opening["type"] == "error":
            raise reader.refused(opening, await _close_code(ws))
    except BaseException:
        await ws.close()
        raise
    return AsyncRealtimeSession(ws, reader)


async def _close_code(ws: ClientConnection) -> int | None:
    """After a refusal's error event: the close code that follows it, if it comes in time."""
    try:
        await asyncio.wait_for(ws.wait_closed(), CLOSE_WAIT_S)
    except TimeoutError:
        return None
    return ws.close_code


class AsyncRealtimeSession:
    """A live session on an event loop: `send_audio`, `end`, `interrupt`, and frames and events
    from `receive()` or `async for`. `sample_rate` and `config_applied` as in RealtimeSession."""

    def __init__(self, ws: ClientConnection, reader: SessionReader) -> None:
        self.ws = ws
        self._reader = reader
        self.ready = reader.ready
        # Why the session ended (`SessionReader.ended`): None while it runs and after a normal end.
        self.failure: ClientError | None = None
        self._closing = False

    @property
    def sample_rate(self) -> int:
        return self._reader.sample_rate

    @property
    def config_applied(self) -> dict[str, Any] | None:
        return self._reader.config_applied

    async def __aenter__(self) -> AsyncRealtimeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _control(self, body: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(body))

    async def send_audio(self, pcm16: bytes) -> None:
        await self.ws.send(pcm16)

    async def configure(self, sample_rate: int) -> None:
        await self._control({"type": "config", "sample_rate": sample_rate})

    async def end(self) -> None:
        await self._control({"type": "end"})

    async def interrupt(self) -> None:
        await self._control({"type": "interrupt"})

    async def ping(self) -> None:
        await self._control({"type": "ping"})

    async def receive(self) -> RealtimeFrame | dict[str, Any]:
        """The next frame or event; ConnectionClosed when the session is over (`failure` then says
        whether it failed; `ws.close_code` and `ws.close_reason` are the raw facts)."""
        try:
            return self._reader.read(await self.ws.recv())
        except ConnectionClosed as e:
            self.failure = self._reader.ended(e, self._closing)
            raise

    async def __aiter__(self) -> AsyncIterator[RealtimeFrame | dict[str, Any]]:
        """Frames and events until the session ends, however it ends: `failure` says how."""
        while True:
            try:
                yield await self.receive()
            except ConnectionClosed:
                return

    async def close(self) -> None:
        self._closing = True
        await self.ws.close()
