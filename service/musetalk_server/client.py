"""A small Python client for MuseTalk Server: preprocess, stream, batch and real-time sessions.

    from musetalk_server.client import Client
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        c.preprocess("anchor", "face.mp4")
        c.batch("anchor", "speech.wav", "anchor.mp4")
        for part in c.stream("anchor", "speech.wav"): ...
        with c.realtime("anchor", sample_rate=16000) as rt:
            rt.send_audio(pcm16_bytes); rt.end()
            for item in rt: ...   # RealtimeFrame or dict events

Timeouts follow each call's work: a preprocess runs for minutes on long clips, so it gets
`PREPROCESS_TIMEOUT_S` (httpx's default of 5 s would give up while the server still works);
streams get a read timeout per part, not for the whole body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .realtime.protocol import LAST, SPEAKING, UNDERRUN, FrameHeader, unpack_frame

__all__ = ["Client", "ClientError", "MjpegPart", "RealtimeFrame", "RealtimeSession"]

CONNECT_TIMEOUT_S = 10.0
PREPROCESS_TIMEOUT_S = 1800.0  # MUSETALK_PREPROCESS_TIMEOUT_S is 900 s in cluster mode; long clips take minutes
BATCH_TIMEOUT_S = 1800.0  # the whole MP4 is rendered before the response starts
STREAM_READ_TIMEOUT_S = 60.0  # between two parts of a stream
REQUEST_TIMEOUT_S = 30.0  # everything else
REALTIME_OPEN_TIMEOUT_S = 30.0  # the first session on an avatar loads it from disk


class ClientError(Exception):
    """The server's error body: HTTP status (or WebSocket close code), `code` and `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class MjpegPart:
    index: int
    timestamp_ms: float
    jpeg: bytes


@dataclass(frozen=True)
class RealtimeFrame:
    header: FrameHeader
    jpeg: bytes
    audio: bytes  # PCM16 at the session's sample rate

    @property
    def speaking(self) -> bool:
        return bool(self.header.flags & SPEAKING)

    @property
    def last(self) -> bool:
        return bool(self.header.flags & LAST)

    @property
    def underrun(self) -> bool:
        return bool(self.header.flags & UNDERRUN)


def _save(response: httpx.Response, out: Path) -> Path:
    """A streamed MP4 response into `out`, or its error raised as a ClientError."""
    if response.status_code >= 400:
        response.read()
        _raise_for(response)
    with out.open("wb") as sink:
        for chunk in response.iter_bytes():
            sink.write(chunk)
    return out


def _raise_for(r: httpx.Response) -> None:
    if r.status_code >= 400:
        try:
            body = r.json()
            raise ClientError(r.status_code, body.get("code", "http_error"), body.get("detail", r.text))
        except ValueError:
            raise ClientError(r.status_code, "http_error", r.text) from None


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers,
                                 timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- HTTP -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        r = self.http.get("/health")
        _raise_for(r)
        return r.json()

    def preprocess(self, avatar_id: str, video: str | Path, *, bbox_shift: int = 0,
                   overwrite: bool = False) -> dict[str, Any]:
        """Upload a face video and wait for the avatar; returns the server's answer (with `info`)."""
        video = Path(video)
        with video.open("rb") as f:
            r = self.http.post("/avatars/preprocess",
                               data={"avatar_id": avatar_id, "bbox_shift": str(bbox_shift),
                                     "overwrite": str(overwrite).lower()},
                               files={"video_file": (video.name, f, "application/octet-stream")},
                               timeout=httpx.Timeout(PREPROCESS_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        _raise_for(r)
        return r.json()

    def avatars(self) -> list[dict[str, Any]]:
        r = self.http.get("/avatars")
        _raise_for(r)
        return r.json()

    def batch(self, avatar_id: str, audio: str | Path, out: str | Path) -> Path:
        """Render an MP4 (video + the uploaded audio) into `out`."""
        audio, out = Path(audio), Path(out)
        with audio.open("rb") as f, self.http.stream(
            "POST", f"/inference/batch/{avatar_id}", files={"audio_file": (audio.name, f, "application/octet-stream")},
            timeout=httpx.Timeout(BATCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        ) as r:
            return _save(r, out)

    def submit_batch(self, avatar_id: str, audio: str | Path) -> dict[str, Any]:
        """Queue an async batch job (`?async=true`); returns the 202 body with `job_id` and `status_url`."""
        audio = Path(audio)
        with audio.open("rb") as f:
            r = self.http.post(f"/inference/batch/{avatar_id}", params={"async": "true"},
                               files={"audio_file": (audio.name, f, "application/octet-stream")},
                               timeout=httpx.Timeout(PREPROCESS_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        _raise_for(r)
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        """An async job's state and progress (`progress.frames_done` of `progress.frames_total`)."""
        r = self.http.get(f"/jobs/{job_id}")
        _raise_for(r)
        return r.json()

    def job_result(self, job_id: str, out: str | Path) -> Path:
        """Save a done job's MP4 into `out` (ClientError 409 job_not_finished before that)."""
        out = Path(out)
        with self.http.stream("GET", f"/jobs/{job_id}/result",
                              timeout=httpx.Timeout(BATCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)) as r:
            return _save(r, out)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job in flight, or discard a finished one and its file."""
        r = self.http.delete(f"/jobs/{job_id}")
        _raise_for(r)
        return r.json()

    def stream(self, avatar_id: str, audio: str | Path, *, realtime: bool = False) -> Iterator[MjpegPart]:
        """The MJPEG stream, part by part, as the server renders it."""
        audio = Path(audio)
        with audio.open("rb") as f, self.http.stream(
            "POST", f"/inference/stream/{avatar_id}", params={"realtime": str(realtime).lower()},
            files={"audio_file": (audio.name, f, "application/octet-stream")},
            timeout=httpx.Timeout(STREAM_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        ) as r:
            if r.status_code >= 400:
                r.read()
                _raise_for(r)
            yield from _mjpeg_parts(r.iter_bytes())

    # --- WebSocket ------------------------------------------------------------------------

    def realtime(self, avatar_id: str, *, sample_rate: int | None = None) -> RealtimeSession:
        """Open `WS /inference/realtime/{avatar_id}`; raises ClientError if the server refuses."""
        from websockets.sync.client import connect

        url = self.base_url.replace("http", "ws", 1) + f"/inference/realtime/{avatar_id}"
        headers = {"X-API-Key": self.api_key} if self.api_key else None
        ws = connect(url, additional_headers=headers, open_timeout=REALTIME_OPEN_TIMEOUT_S, max_size=None)
        return RealtimeSession(ws, sample_rate)


class RealtimeSession:
    """A live session: send audio and controls from any thread, iterate frames and events."""

    def __init__(self, ws, sample_rate: int | None) -> None:
        self.ws = ws
        self._send = threading.Lock()
        self.ready = self._first(ws.recv(timeout=REALTIME_OPEN_TIMEOUT_S))
        if sample_rate is not None:
            self._control({"type": "config", "sample_rate": sample_rate})
        self.sample_rate = sample_rate or self.ready["sample_rate"]

    def _first(self, message) -> dict[str, Any]:
        body = json.loads(message) if isinstance(message, str) else {}
        if body.get("type") == "error":
            code = self.ws.close_code if self._wait_closed() else 1006
            raise ClientError(code, body["code"], body["detail"])
        if body.get("type") != "ready":
            raise ClientError(0, "protocol", f"expected ready, got {body!r}")
        return body

    def _wait_closed(self) -> bool:
        """After a refusal's error event: wait for the close, so its code is known."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.recv(timeout=5)
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
        """The next frame or event; ConnectionClosed when the session is over."""
        message = self.ws.recv(timeout=timeout)
        if isinstance(message, str):
            return json.loads(message)
        header, jpeg, audio = unpack_frame(message)
        return RealtimeFrame(header, jpeg, audio)

    def __iter__(self) -> Iterator[RealtimeFrame | dict[str, Any]]:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def close(self) -> None:
        self.ws.close()


def _mjpeg_parts(chunks: Iterator[bytes]) -> Iterator[MjpegPart]:
    """Parse multipart/x-mixed-replace parts as they arrive (Content-Length framed)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buf[:head_end].decode("latin-1")
            if "--frame--" in head.split("\r\n")[0]:
                return
            fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            n = int(fields.get("Content-Length", "0"))
            if len(buf) < head_end + 4 + n + 2:
                break
            body = buf[head_end + 4:head_end + 4 + n]
            buf = buf[head_end + 4 + n + 2:]
            if fields.get("X-Stream-Error") == "true":
                err = json.loads(body)
                raise ClientError(500, err.get("code", "internal_error"), err.get("detail", ""))
            yield MjpegPart(int(fields["X-Frame-Index"]), float(fields["X-Timestamp-Ms"]), body)
