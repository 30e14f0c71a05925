"""Reading `POST /inference/stream/{avatar_id}`: multipart/x-mixed-replace parts as they arrive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ClientError

__all__ = ["MjpegPart", "mjpeg_parts"]

HEAD_END = b"\r\n\r\n"
PART_END = len(b"\r\n")  # after each part's body
CLOSING_BOUNDARY = "--frame--"


@dataclass(frozen=True)
class MjpegPart:
    index: int
    timestamp_ms: float
    jpeg: bytes


def mjpeg_parts(chunks: Iterator[bytes]) -> Iterator[MjpegPart]:
    """Parts framed by their Content-Length; an error part (`X-Stream-Error: true`) raises ClientError.

    A render that fails after the first byte can no longer change the HTTP status, so the server
    ends the stream with one error part carrying the usual error body.
    """
    buf = b""
    for chunk in chunks:
        buf += chunk
        while (head_end := buf.find(HEAD_END)) >= 0:
            lines = buf[:head_end].decode("latin-1").split("\r\n")
            if CLOSING_BOUNDARY in lines[0]:
                return
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            body_start = head_end + len(HEAD_END)
            body_end = body_start + int(fields.get("Content-Length", "0"))
            if len(buf) < body_end + PART_END:
                break  # the rest of this part is still on the way
            body, buf = buf[body_start:body_end], buf[body_end + PART_END:]
            if fields.get("X-Stream-Error") == "true":
                err = json.loads(body)
                # The status the error would have had; a server before the header sent 500s only.
                status = int(fields.get("X-Stream-Error-Status", "500"))
                raise ClientError(status, err.get("code", "internal_error"), err.get("detail", ""))
            yield MjpegPart(int(fields["X-Frame-Index"]), float(fields["X-Timestamp-Ms"]), body)
