"""JPEG frames and the MJPEG multipart framing (multipart/x-mixed-replace)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np

__all__ = ["BOUNDARY", "MJPEG_MEDIA_TYPE", "encode_jpeg", "jpeg_part", "error_part", "closing_boundary"]

BOUNDARY = "frame"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def jpeg_part(jpeg: bytes, index: int, timestamp_ms: float) -> bytes:
    """One multipart part: headers a client can sync to, then the JPEG.

    X-Timestamp-Ms is whole milliseconds like every other *-Ms header, rounded down as the
    real-time frames' pts_ms are (realtime/timeline.py): frame i of 30 fps is at 33, 66, 100."""
    head = (
        f"--{BOUNDARY}\r\n"
        "Content-Type: image/jpeg\r\n"
        f"Content-Length: {len(jpeg)}\r\n"
        f"X-Frame-Index: {index}\r\n"
        f"X-Timestamp-Ms: {math.floor(timestamp_ms)}\r\n\r\n"
    )
    return head.encode() + jpeg + b"\r\n"


def error_part(error: dict[str, str], status: int) -> bytes:
    """The last part of a stream that failed after its first byte: never a silent truncation.

    `error` is the project's error body (`errors.error_body`), `status` the HTTP status it would
    have had (`X-Stream-Error-Status`): the response's own status went out with the first byte."""
    body = json.dumps(error).encode()
    head = (
        f"--{BOUNDARY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Stream-Error: true\r\n"
        f"X-Stream-Error-Status: {status}\r\n\r\n"
    )
    return head.encode() + body + b"\r\n" + closing_boundary()


def closing_boundary() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()
