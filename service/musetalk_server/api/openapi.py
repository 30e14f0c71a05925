"""What the OpenAPI schema declares beyond FastAPI's defaults, in one place.

Routes reference these with small `responses=` arguments, so the schema says what the service
really answers: the one error body `{"detail", "code"}` for every status a route can answer
(FastAPI would otherwise document a list-shaped 422 that the service never sends), and the real
media types of the two inference responses instead of `application/json` strings.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..media.jpeg import MJPEG_MEDIA_TYPE

__all__ = ["ErrorBody", "errors", "STREAM_RESPONSE", "MP4_RESPONSE", "JPEG_RESPONSE", "METRICS_RESPONSE",
           "DESCRIPTION", "REALTIME_DOC_URL", "BATCH_WHEN", "JOB", "JOB_ACCEPTED", "JOB_RESULT", "JOB_WHEN"]

# The README section that documents the real-time WebSocket (OpenAPI 3.1 has no WebSocket operations).
REALTIME_DOC_URL = "https://github.com/musetalk-server/musetalk-server#real-time-sessions"

DESCRIPTION = (
    "Audio-driven lip sync: preprocess a face video once, then drive it with audio.\n\n"
    "Every error has one body, `{\"detail\": str, \"code\": str}`; the codes are listed per status below "
    "each operation and in the README's error table.\n\n"
    "**Real-time sessions** run over the WebSocket `/inference/realtime/{avatar_id}`, which OpenAPI cannot "
    f"describe: its wire protocol is in the README, [Real-time WebSocket]({REALTIME_DOC_URL}) "
    "(in a checkout: README.md, section \"Real-time WebSocket\")."
)


class ErrorBody(BaseModel):
    """The one error shape of the service."""

    detail: str = Field(description="A human-readable message")
    code: str = Field(description="A machine code, stable across versions")


# For each status: the codes it carries and when. Mirrors the README's error table.
_WHEN: dict[int, str] = {
    401: "`unauthorized`: MUSETALK_API_KEY is set and the request lacks the key",
    404: "`avatar_not_found`: the avatar does not exist",
    409: "`avatar_exists`: the id is taken and overwrite is false; "
         "`avatar_engine_mismatch`: the avatar was prepared by another engine",
    413: "`too_large`: the upload, the audio or the video is over its limit",
    415: "`unsupported_media`: the file is not decodable media of the needed kind",
    422: "`invalid_input`, `invalid_avatar_id`, `no_face_detected`, or `unsupported_media` "
         "for decodable but empty media",
    429: "`busy`: the device cannot take the work on time now; `Retry-After` says when to try again",
    500: "`internal_error` or `weights_error`: a model or codec failure (the trace stays in the server log); "
         "`avatar_corrupt`: that avatar's files cannot be read back",
    503: "`not_ready`: the engine is still loading or failed to load, or the server is shutting down",
    507: "`insufficient_storage`: the disk filled while storing the upload, the avatar or the MP4; "
         "nothing half-written is kept",
    504: "`preprocess_timeout` (cluster mode only): the Avatar was not Ready in time; it carries on",
}


# The async job routes answer the same statuses with their own codes.
JOB_WHEN: dict[int, str] = {
    404: "`job_not_found`: no such job, or it expired",
    409: "`job_not_finished`: the job is queued or running; `job_failed`: it failed or was cancelled, "
         "so there is no MP4",
    422: "`invalid_input`: the id is not of the form jobs are given (letters, digits, `-` and `_`)",
}
# ... and a batch with async=true may also be refused because the job queue is full.
BATCH_WHEN: dict[int, str] = {429: _WHEN[429] + "; with `async=true`, `too_many_jobs`: MUSETALK_MAX_JOBS "
                                               "async jobs are already queued or running"}


def errors(*statuses: int, when: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, each with the error body and its codes (`when`
    overrides the shared descriptions, for routes whose codes differ)."""
    texts = {**_WHEN, **(when or {})}
    return {status: {"model": ErrorBody, "description": texts[status]} for status in statuses}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_SYNC_HEADERS = {
    "X-Frame-Rate": {"description": "frames per second", "schema": {"type": "string"}},
    "X-Frame-Count": {"description": "floor(audio seconds x fps)", "schema": {"type": "integer"}},
    "X-Audio-Duration-Ms": {"description": "length of the decoded audio", "schema": {"type": "integer"}},
}

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "MJPEG: one JPEG per part, with Content-Type, Content-Length, X-Frame-Index and "
                   "X-Timestamp-Ms; a failure after the first byte ends with an application/json part "
                   "carrying X-Stream-Error: true and the error body",
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


# The JSON bodies of the successful answers, as JSON Schema. Written out here rather than as
# response models so the routes stay as they are; the schema test checks real bodies against them.
def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_AVATAR_INFO = _object(
    {"frames": _INT, "fps": _NUM, "width": _INT, "height": _INT, "bbox_shift": _INT, "engine": _STR,
     "size": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2}},
    {"face": {"type": ["object", "null"], "description": "face box statistics and bbox_shift_range"},
     "engine_version": {"type": ["integer", "null"]}, "engine_info": {"type": ["object", "null"]},
     "source": {"type": ["object", "string", "null"]}, "created_at": {"type": ["string", "number", "null"]},
     "preprocess_seconds": {"type": ["number", "null"]}},
)
_AVATAR = _object({"avatar_id": _STR, "loaded": _BOOL},
                  {"info": _AVATAR_INFO, "phase": {**_STR, "description": "cluster mode: the Avatar's phase"},
                   "message": {"type": ["string", "null"]}})


def ok(schema: dict[str, Any], description: str = "Success") -> dict[int | str, dict[str, Any]]:
    """A `responses=` entry for a 200 JSON body with this schema."""
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


HEALTH = _object({
    "status": {"const": "running"},
    "models": _object({"loaded": _BOOL, "device": _STR}),
    "loaded_avatars": {"type": "array", "items": _STR},
    "engine": _STR, "engine_info": {"type": "object"}, "version": _STR, "avatar_source": _STR,
    "active_streams": _INT,
})
LIVE = _object({"status": {"const": "alive"}})
READY = _object({"status": {"const": "ready"}, "engine": _STR})
AVATAR = _object({"avatar_id": _STR, "loaded": _BOOL, "info": _AVATAR_INFO})
AVATAR_LIST = _object({"avatars": {"type": "array", "items": _AVATAR}})
PREPROCESSED = _object({"message": _STR, "avatar_id": _STR, "info": _AVATAR_INFO})
DELETED = _object({"message": _STR, "avatar_id": _STR})
_TIME = {"type": ["string", "null"], "format": "date-time"}
JOB = _object({
    "job_id": _STR, "avatar_id": _STR,
    "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
    "progress": _object({"frames_done": _INT, "frames_total": _INT}),
    "fps": _NUM, "error": {"type": ["object", "null"], "description": "the error body, once failed"},
    "created_at": _STR, "finished_at": _TIME, "expires_at": _TIME,
    "status_url": _STR, "result_url": _STR,
})
JOB_RESULT: dict[int | str, dict[str, Any]] = {200: {
    "description": "The finished job's MP4: H.264 yuv420p and AAC",
    "content": {"video/mp4": _BINARY},
    "headers": {k: _SYNC_HEADERS[k] for k in ("X-Frame-Rate", "X-Frame-Count")},
}}
JOB_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {
    "description": "With `async=true`: the job is queued; poll `status_url` (also in `Location`), "
                   "fetch the MP4 from `result_url` once its state is `done`",
    "content": {"application/json": {"schema": JOB}},
    "headers": {"Location": {"description": "the job's status_url", "schema": _STR}},
}}
