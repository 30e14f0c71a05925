"""The HTTP and WebSocket client: preprocess, stream, batch, async jobs and real-time sessions.

Timeouts follow each call's work: a preprocess runs for minutes on long clips, so it gets
`PREPROCESS_TIMEOUT_S` (httpx's default of 5 s would give up while the server still works);
streams get a read timeout per part, not for the whole body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .errors import error_from
from .mjpeg import MjpegPart, mjpeg_parts
from .paths import segment
from .realtime import OPEN_TIMEOUT_S, RealtimeSession, realtime_url

__all__ = ["Client"]

CONNECT_TIMEOUT_S = 10.0
PREPROCESS_TIMEOUT_S = 1800.0  # MUSETALK_PREPROCESS_TIMEOUT_S is 900 s in cluster mode; long clips take minutes
BATCH_TIMEOUT_S = 1800.0  # the whole MP4 is rendered before the response starts
STREAM_READ_TIMEOUT_S = 60.0  # between two parts of a stream
REQUEST_TIMEOUT_S = 30.0  # everything else


def _save(response: httpx.Response, out: Path) -> Path:
    """A streamed MP4 response into `out` (its folder made if missing), or its error raised as a ClientError."""
    if response.status_code >= 400:
        response.read()
        _raise_for(response)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        for chunk in response.iter_bytes():
            sink.write(chunk)
    return out


def _raise_for(r: httpx.Response) -> None:
    """An error response as a ClientError (`errors.error_from`); a success passes."""
    if r.status_code >= 400:
        raise error_from(r.status_code, r.content, r.headers.get("Retry-After"))


class Client:
    """One server: `Client(base_url, api_key=...)`, used as a context manager or closed with `close()`."""

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

    def avatars(self) -> dict[str, Any]:
        """`{"avatars": [...]}`, each with `avatar_id`, `loaded` and its `info`."""
        r = self.http.get("/avatars")
        _raise_for(r)
        return r.json()

    def avatar(self, avatar_id: str) -> dict[str, Any]:
        """One avatar: `avatar_id`, `loaded`, and `info` (frames, fps, width, height, engine...)."""
        r = self.http.get(f"/avatars/{segment(avatar_id)}")
        _raise_for(r)
        return r.json()

    def delete_avatar(self, avatar_id: str) -> dict[str, Any]:
        """Delete an avatar: `{"message": "Avatar deleted", "avatar_id": ...}`."""
        r = self.http.delete(f"/avatars/{segment(avatar_id)}")
        _raise_for(r)
        return r.json()

    def batch(self, avatar_id: str, audio: str | Path, out: str | Path) -> Path:
        """Render an MP4 (video + the uploaded audio) into `out` (its folder made if missing)."""
        audio, out = Path(audio), Path(out)
        with audio.open("rb") as f, self.http.stream(
            "POST", f"/inference/batch/{segment(avatar_id)}", files={"audio_file": (audio.name, f, "application/octet-stream")},
            timeout=httpx.Timeout(BATCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        ) as r:
            return _save(r, out)

    def submit_batch(self, avatar_id: str, audio: str | Path) -> dict[str, Any]:
        """Queue an async batch job (`?async=true`); returns the 202 body with `job_id` and `status_url`."""
        audio = Path(audio)
        with audio.open("rb") as f:
            r = self.http.post(f"/inference/batch/{segment(avatar_id)}", params={"async": "true"},
                               files={"audio_file": (audio.name, f, "application/octet-stream")},
                               timeout=httpx.Timeout(PREPROCESS_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        _raise_for(r)
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        """An async job's state and progress (`progress.frames_done` of `progress.frames_total`)."""
        r = self.http.get(f"/jobs/{segment(job_id)}")
        _raise_for(r)
        return r.json()

    def job_result(self, job_id: str, out: str | Path) -> Path:
        """Save a done job's MP4 into `out`, its folder made if missing (ClientError 409
        job_not_finished before that)."""
        out = Path(out)
        with self.http.stream("GET", f"/jobs/{segment(job_id)}/result",
                              timeout=httpx.Timeout(BATCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)) as r:
            return _save(r, out)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job in flight, or discard a finished one and its file."""
        r = self.http.delete(f"/jobs/{segment(job_id)}")
        _raise_for(r)
        return r.json()

    def stream(self, avatar_id: str, audio: str | Path, *, realtime: bool = False) -> Iterator[MjpegPart]:
        """The MJPEG stream, part by part, as the server renders it."""
        audio = Path(audio)
        with audio.open("rb") as f, self.http.stream(
            "POST", f"/inference/stream/{segment(avatar_id)}", params={"realtime": str(realtime).lower()},
            files={"audio_file": (audio.name, f, "application/octet-stream")},
            timeout=httpx.Timeout(STREAM_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        ) as r:
            if r.status_code >= 400:
                r.read()
                _raise_for(r)
            yield from mjpeg_parts(r.iter_bytes())

    # --- WebSocket ------------------------------------------------------------------------

    def realtime(self, avatar_id: str, *, sample_rate: int | None = None) -> RealtimeSession:
        """Open `WS /inference/realtime/{avatar_id}`, with audio at `sample_rate` (the server's
        16000 if None) from the first frame on; raises ClientError if the server refuses."""
        headers = {"X-API-Key": self.api_key} if self.api_key else None
        try:
            ws = connect(realtime_url(self.base_url, avatar_id, sample_rate), additional_headers=headers,
                         open_timeout=OPEN_TIMEOUT_S, max_size=None)
        except InvalidStatus as e:
            raise error_from(e.response.status_code, e.response.body or b"",
                             e.response.headers.get("Retry-After")) from e
        # The session owns the connection and closes it. websockets 17.1 warns when a connection is
        # used outside `with` (its `legacy=True` is not in 13-17.0); entering it says it is owned.
        return RealtimeSession(ws.__enter__(), sample_rate)
