"""A real-time session over `WS /inference/realtime/{avatar_id}`, and its binary frame format.

Server to client, one binary message per output frame: a 24-byte little-endian header
`<4sIIIHHI` (magic b"MTF1", frame index, pts ms, utterance, flags, reserved, JPEG length), the
JPEG, then the frame's PCM16 audio. Client to server: PCM16 little-endian mono as binary
messages, and the JSON text messages `config`, `end`, `interrupt`, `ping`. The audio rate is
chosen in the URL (`?sample_rate=R`, echoed in `ready`); a later `config` is answered with
`config_applied`, which names the first frame at the new rate. The server's writer of this format
is `musetalk_server.render.realtime.protocol`; tests/client checks that the two agree.
"""

from __future__ import annotations

import json
import struct
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from .errors import ClientError
from .paths import segment

__all__ = ["LAST", "SPEAKING", "UNDERRUN", "FrameHeader", "RealtimeFrame", "RealtimeSession", "SessionReader",
           "realtime_url", "unpack_frame"]

MAGIC = b"MTF1"
HEADER = struct.Struct("<4sIIIHHI")
HEADER_BYTES = HEADER.size  # 24
# Flag bits of FrameHeader.flags.
SPEAKING = 1  # the frame belongs to an utterance
LAST = 2  # the last frame of its utterance (ended by `end`)
UNDERRUN = 4  # the utterance's audio ran short: closed mouth and zeros
OPEN_TIMEOUT_S = 30.0  # the first session on an avatar loads it from disk
CLOSE_WAIT_S = 5.0  # after a refusal's error event, for its close code
ABNORMAL_CLOSURE = 1006  # RFC 6455: the connection dropped without a close frame
NORMAL_CLOSURE = 1000  # the server ended the session from outside (its WebRTC resource deleted)


@dataclass(frozen=True)
class FrameHeader:
    index: int
    pts_ms: int
    utterance: int
    flags: int
    jpeg_bytes: int


def unpack_frame(message: bytes) -> tuple[FrameHeader, bytes, bytes]:
    """(header, JPEG, PCM16 audio) of one frame message."""
    magic, index, pts, utterance, flags, _reserved, n = HEADER.unpack_from(message)
    if magic != MAGIC:
        raise ValueError(f"not a frame message: magic {magic!r}")
    jpeg = message[HEADER_BYTES:HEADER_BYTES + n]
    return FrameHeader(index, pts, utterance, flags, n), jpeg, message[HEADER_BYTES + n:]


@dataclass(frozen=True)
class RealtimeFrame:
    header: FrameHeader
    jpeg: bytes
    audio: bytes  # PCM16 mono at `sample_rate`
    sample_rate: int  # the rate this frame's audio is at (`ready`'s, or a later `config_applied`'s)

    @property
    def speaking(self) -> bool:
        return bool(self.header.flags & SPEAKING)

    @property
    def last(self) -> bool:
        return bool(self.header.flags & LAST)

    @property
    def underrun(self) -> bool:
        return bool(self.header.flags & UNDERRUN)


def realtime_url(base_url: str, avatar_id: str, sample_rate: int | None) -> str:
    """The session's WebSocket URL: `sample_rate` (the server's 16000 if None) holds from frame 0."""
    url = base_url.rstrip("/").replace("http", "ws", 1) + f"/inference/realtime/{segment(avatar_id)}"
    return url if sample_rate is None else f"{url}?sample_rate={int(sample_rate)}"


class SessionReader:
    """What the sync and async sessions share: the opening `ready` (or refusal), and each later
    message as a frame or an event, with the audio rate each frame is at."""

    def __init__(self, asked_rate: int | None) -> None:
        self.asked_rate = asked_rate
        self.ready: dict[str, Any] = {}
        self.sample_rate = 0
        self.config_applied: dict[str, Any] | None = None  # the latest `config_applied` event read
        self.error: dict[str, Any] | None = None  # the latest `error` event that ends a session
        self._rates: deque[tuple[int, int]] = deque()  # (first frame, rate): rate changes not yet reached

    def opening(self, message: str | bytes) -> dict[str, Any]:
        """The first message as an event: `ready`, or a refusal's `error` (the caller then waits
        for the close code and calls `refused`); anything else is a ClientError."""
        body = json.loads(message) if isinstance(message, str) else {}
        if body.get("type") not in ("ready", "error"):
            raise ClientError(0, "protocol", f"expected ready, got {body!r}")
        if body["type"] == "ready":
            self.ready, self.sample_rate = body, body["sample_rate"]
            self._rates.append((0, self.sample_rate))
            if self.asked_rate is not None and self.asked_rate != self.sample_rate:
                raise ClientError(0, "protocol", f"asked for sample_rate {self.asked_rate} in the URL, but the "
                                                 f"server's ready says {self.sample_rate}: a server older than "
                                                 "the query parameter")
        return body

    @staticmethod
    def refused(error: dict[str, Any], close_code: int | None) -> ClientError:
        return ClientError(close_code or ABNORMAL_CLOSURE, error["code"], error["detail"])

    def read(self, message: str | bytes) -> RealtimeFrame | dict[str, Any]:
        if isinstance(message, str):
            event: dict[str, Any] = json.loads(message)
            if event.get("type") == "config_applied":
                self.config_applied, self.sample_rate = event, event["sample_rate"]
                self._rates.append((event["frame"], event["sample_rate"]))
            elif event.get("type") == "error" and event.get("code") != "too_large":  # too_large: it goes on
                self.error = event
            return event
        header, jpeg, audio = unpack_frame(message)
        return RealtimeFrame(header, jpeg, audio, self._rate_of(header.index))

    def ended(self, closed: ConnectionClosed, by_client: bool) -> ClientError | None:
        """Why a session ended, from how its connection closed: None for a normal end (this client
        closed it, or the server did with 1000), else a ClientError whose status is the close code
        and whose code and detail are the `error` event's before it (`connection_closed` without
        one: a server restarting closes with 1012, a connection that drops reads 1006)."""
        code = closed.rcvd.code if closed.rcvd is not None else ABNORMAL_CLOSURE
        if by_client or code == NORMAL_CLOSURE:
            return None
        if self.error is not None:
            return ClientError(code, self.error.get("code", "internal_error"), self.error.get("detail", ""))
        reason = closed.rcvd.reason if closed.rcvd is not None and closed.rcvd.reason else "no reason given"
        return ClientError(code, "connection_closed", f"the session's connection closed ({code}: {reason})")

    def _rate_of(self, index: int) -> int:
        """The audio rate of frame `index`; frames come in index order, so passed changes are dropped."""
        while len(self._rates) > 1 and self._rates[1][0] <= index:
            self._rates.popleft()
        return self._rates[0][1]


class RealtimeSession:
    """A live session: send audio and controls from any thread, iterate frames and events.

    `sample_rate` is the session's audio rate, in and out: `ready`'s, then that of the latest
    `config_applied` read (`configure` changes it before the first audio). Each frame carries the
    rate its own audio is at, since frames sent before a change is applied keep the old one.
    """

    def __init__(self, ws: ClientConnection, sample_rate: int | None = None) -> None:
        self.ws = ws
        # Why the session ended (`SessionReader.ended`): None while it runs and after a normal end.
        self.failure: ClientError | None = None
        self._closing = False
        self._send = threading.Lock()
        self._reader = SessionReader(sample_rate)
        try:
            opening = self._reader.opening(ws.recv(timeout=OPEN_TIMEOUT_S))
        except ClientError:
            ws.close()
            raise
        if opening["type"] == "error":
            raise self._reader.refused(opening, self.ws.close_code if self._wait_closed() else None)
        self.ready = self._reader.ready

    @property
    def sample_rate(self) -> int:
        return self._reader.sample_rate

    @property
    def config_applied(self) -> dict[str, Any] | None:
        return self._reader.config_applied

    def configure(self, sample_rate: int) -> None:
        """Change the audio rate (before the first audio); the server answers with `config_applied`."""
        self._control({"type": "config", "sample_rate": sample_rate})

    def _wait_closed(self) -> bool:
        """After a refusal's error event: wait for the close, so its code is known."""
        try:
            self.ws.recv(timeout=CLOSE_WAIT_S)
        except (ConnectionClosed, TimeoutError):
            return True
        return False

    def __enter__(self) -> RealtimeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _control(self, body: dict[str, Any]) -> None:
        with self._send:
            self.ws.send(json.dumps(body))

    def send_audio(self, pcm16: bytes) -> None:
        with self._send:
            self.ws.send(pcm16)

    def end(self) -> None:
        self._control({"type": "end"})

    def interrupt(self) -> None:
        self._control({"type": "interrupt"})

    def ping(self) -> None:
        self._control({"type": "ping"})

    def receive(self, timeout: float | None = None) -> RealtimeFrame | dict[str, Any]:
        """The next frame or event; ConnectionClosed when the session is over (`failure` then says
        whether it failed), TimeoutError after `timeout` seconds without one."""
        try:
            return self._reader.read(self.ws.recv(timeout=timeout))
        except ConnectionClosed as e:
            self.failure = self._reader.ended(e, self._closing)
            raise

    def __iter__(self) -> Iterator[RealtimeFrame | dict[str, Any]]:
        """Frames and events until the session ends, however it ends: `failure` says how."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def close(self) -> None:
        self._closing = True
        self.ws.close()
