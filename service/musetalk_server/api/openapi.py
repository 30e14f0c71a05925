"""What the OpenAPI schema declares beyond the routes' signatures and response models, in one place.

The error responses of every route are generated from the error tree (errors.py): a route names
the kinds of operation it is (`error_responses("keyed", "avatar")`), and gets, per status, every
error raised by one of those kinds, with its codes and when they happen. The one error body
`{"detail", "code"}` replaces FastAPI's list-shaped 422, which the service never sends. The
binary answers (MJPEG, MP4, JPEG, metrics text) get their real media types and headers here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..errors import MuseTalkError, OperationKind, documented_errors
from ..media.jpeg import MJPEG_MEDIA_TYPE
from .models import ErrorBody, Job

__all__ = ["error_responses", "STREAM_RESPONSE", "MP4_RESPONSE", "JPEG_RESPONSE", "METRICS_RESPONSE",
           "DESCRIPTION", "REALTIME_DOC_URL", "JOB_ACCEPTED", "JOB_RESULT"]

# The page that documents the real-time WebSocket (OpenAPI 3.1 has no WebSocket operations).
REALTIME_DOC_URL = "https://github.com/musetalk-server/musetalk-server/blob/main/docs/realtime.md"

DESCRIPTION = (
    "Audio-driven lip sync: preprocess a face video once, then drive it with audio.\n\n"
    "Every error has one body, `{\"detail\": str, \"code\": str}`; the codes are listed per status below "
    "each operation and in docs/errors.md.\n\n"
    "**Real-time sessions** run over the WebSocket `/inference/realtime/{avatar_id}`, which OpenAPI cannot "
    f"describe: its wire protocol is in [docs/realtime.md]({REALTIME_DOC_URL}) (in a checkout: docs/realtime.md)."
)


_COMPONENTS = "#/components/schemas"  # ErrorBody is there: the Job model holds one


def error_responses(*kinds: OperationKind) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for every error that an operation of these kinds can answer, by status."""
    by_status: dict[int, list[type[MuseTalkError]]] = defaultdict(list)
    for error in documented_errors():
        if error.raised_by & set(kinds):
            by_status[error.status].append(error)
    return {status: _error_response(errors) for status, errors in sorted(by_status.items())}


def _error_response(errors: list[type[MuseTalkError]]) -> dict[str, Any]:
    codes = list(dict.fromkeys(e.code for e in errors))
    # The one error body, its `code` narrowed to the codes this operation answers with this status.
    schema = {"$ref": f"{_COMPONENTS}/{ErrorBody.__name__}", "properties": {"code": {"enum": codes}}}
    response: dict[str, Any] = {
        "description": "; ".join(f"`{e.code}`: {e.when}" for e in errors),
        "content": {"application/json": {"schema": schema}},
    }
    headers = {name: {"description": text, "schema": {"type": "string"}}
               for e in errors for name, text in e.response_headers.items()}
    if headers:
        response["headers"] = headers
    return response


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_INTEGER_TEXT = {"type": "string", "pattern": "^[0-9]+$"}
_SYNC_HEADERS = {
    "X-Frame-Rate": {"description": "frames per second, e.g. `25` or `29.97`", "schema": {"type": "string"}},
    "X-Frame-Count": {"description": "floor(audio seconds x fps)", "schema": {"type": "integer"}},
    "X-Audio-Duration-Ms": {"description": "length of the decoded audio in whole milliseconds",
                            "schema": {"type": "integer"}},
}

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "MJPEG: one JPEG per part, with Content-Type, Content-Length, X-Frame-Index (0, 1, ...) and "
                   "X-Timestamp-Ms (the frame's time in whole milliseconds, floor(index x 1000 / fps), as a "
                   "real-time frame's pts_ms); a failure after the first byte ends with an application/json part carrying "
                   "X-Stream-Error: true, X-Stream-Error-Status (the status the error would have had) and the error body",
    "content": {MJPEG_MEDIA_TYPE: _BINARY},
    "headers": _SYNC_HEADERS,
}}

MP4_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "An MP4: H.264 yuv420p and AAC",
    "content": {"video/mp4": _BINARY},
    "headers": _SYNC_HEADERS,
}}

JPEG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "A JPEG of the avatar's first frame",
    "content": {"image/jpeg": _BINARY},
}}

METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "Prometheus text exposition format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}}

JOB_RESULT: dict[int | str, dict[str, Any]] = {200: {
    "description": "The finished job's MP4: H.264 yuv420p and AAC",
    "content": {"video/mp4": _BINARY},
    "headers": {k: _SYNC_HEADERS[k] for k in ("X-Frame-Rate", "X-Frame-Count")},
}}

JOB_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {
    "description": "With `async=true`: the job is queued; poll `status_url` (also in `Location`), "
                   "fetch the MP4 from `result_url` once its state is `done`",
    "model": Job,
    "headers": {"Location": {"description": "the job's status_url", "schema": {"type": "string"}}},
}}
