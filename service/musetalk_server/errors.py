"""The project's error tree: the one source of the HTTP error contract.

Every error the service raises on purpose is a `MuseTalkError` whose class carries the HTTP
status, the machine `code` clients see in `{"detail": ..., "code": ...}` (`error_body`), `when`
(what it means, for people) and `raised_by` (which kinds of operation answer it). From these
alone come the error handlers (api/errors.py), every route's declared error responses
(api/openapi.py) and the table in docs/errors.md (`python scripts/docs_tables.py`): adding an
error code is adding a class here.

A class that sets no `when` of its own shares its parent's row (RenderError is an
internal_error). Anything else that escapes is a bug: the handler logs its trace and answers a
generic 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

__all__ = [
    "error_body",
    "documented_errors",
    "OperationKind",
    "MuseTalkError",
    "InvalidAvatarId",
    "AvatarNotFound",
    "AvatarExists",
    "AvatarEngineMismatch",
    "TooLarge",
    "UnsupportedMedia",
    "EmptyMedia",
    "InvalidSamples",
    "NoFaceDetected",
    "InvalidInput",
    "Unauthorized",
    "RouteNotFound",
    "MethodNotAllowed",
    "CorsRefused",
    "NotReady",
    "Busy",
    "WeightsError",
    "EngineError",
    "RenderError",
    "PreprocessTimeout",
    "InsufficientStorage",
    "AvatarCorrupt",
    "SessionTimeout",
    "JobNotFound",
    "JobNotFinished",
    "JobFailed",
    "JobLost",
    "TooManyJobs",
    "NotSdp",
    "InvalidOffer",
    "SessionNotFound",
    "TooManyViewers",
]

# What kind of operation answers an error. A route names the kinds it is (api/routes/), an error
# the kinds that raise it; the route's declared error responses are the errors they share.
OperationKind = Literal[
    "keyed",  # needs MUSETALK_API_KEY when set: every avatar, inference and job route
    "avatar",  # names an existing avatar in its path
    "reads_avatar",  # reads that avatar's stored files (its manifest, a frame)
    "upload",  # takes a file (and form or query fields) that is checked and decoded
    "preprocess",  # makes an avatar from a video
    "device",  # runs work on the engine through the device scheduler
    "render",  # renders an avatar's frames (stream, batch)
    "async_batch",  # queues a render as an async job
    "job",  # names an async job in its path
    "job_result",  # fetches an async job's MP4
    "probe",  # the readiness probe
    "realtime",  # the real-time WebSocket (closes with 4000 + the status; OpenAPI cannot describe it)
    "realtime_open",  # opens a real-time session of an avatar over HTTP (POST /inference/webrtc/{avatar_id})
    "sdp_offer",  # takes an SDP offer as its body
    "live_session",  # names a live real-time session (or one of its viewers) in its path
    "viewer_join",  # adds a viewer to a live session
]


def error_body(detail: str, code: str) -> dict[str, str]:
    """The one JSON error shape, everywhere: handlers, middleware, a stream's error part, the CLI."""
    return {"detail": detail, "code": code}


class MuseTalkError(Exception):
    """Base of every error the service raises on purpose. `code` is the machine code clients see."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    when: ClassVar[str] = "model or GPU failure; the trace goes to the server log, never to the client"
    raised_by: ClassVar[frozenset[OperationKind]] = frozenset({"device", "realtime", "realtime_open"})
    # Headers the answer carries besides the body, by name: what each says (for the OpenAPI).
    response_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, str]:
        return error_body(self.detail, self.code)

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the body (Busy: Retry-After)."""
        return {}


def documented_errors() -> Iterator[type[MuseTalkError]]:
    """The tree in definition order, depth first: every class that documents its own `when`."""

    def walk(cls: type[MuseTalkError]) -> Iterator[type[MuseTalkError]]:
        if "when" in vars(cls):
            yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    return walk(MuseTalkError)


class InvalidAvatarId(MuseTalkError):
    status, code = 422, "invalid_avatar_id"
    when = "the id does not match `^[A-Za-z0-9_-]{1,64}$` (path traversal included)"
    raised_by = frozenset({"avatar", "preprocess", "realtime", "realtime_open"})


class AvatarNotFound(MuseTalkError):
    status, code = 404, "avatar_not_found"
    when = "the avatar does not exist (it needs preprocessing)"
    raised_by = frozenset({"avatar", "realtime", "realtime_open"})


class AvatarExists(MuseTalkError):
    status, code = 409, "avatar_exists"
    when = ("preprocess of an existing id with another video, `bbox_shift`, engine or fps, without "
            "`overwrite=true` (the same ones are a retry: 200)")
    raised_by = frozenset({"preprocess"})


class AvatarEngineMismatch(MuseTalkError):
    """An avatar prepared by one engine was asked for by another: its artifacts do not fit."""

    status, code = 409, "avatar_engine_mismatch"
    when = "the avatar was prepared by another engine than the one serving"
    raised_by = frozenset({"render", "realtime", "realtime_open"})


class TooLarge(MuseTalkError):
    status, code = 413, "too_large"
    when = ("upload over `MUSETALK_MAX_UPLOAD_MB`, audio over `MUSETALK_MAX_AUDIO_SECONDS`, video over "
            "`MUSETALK_MAX_VIDEO_SECONDS`, `MUSETALK_MAX_VIDEO_FRAMES` or `MUSETALK_MAX_VIDEO_PIXELS` per frame "
            "(refused from the header when it declares so, else as soon as decoding crosses the limit; a bare "
            "AAC or MP3 stream declares nothing, as its length would only be guessed)")
    raised_by = frozenset({"upload", "realtime"})


class UnsupportedMedia(MuseTalkError):
    status, code = 415, "unsupported_media"
    when = ("the file is not decodable media of the needed kind (a text file named `.mp4`, a truncated mp4, "
            "a video without sound as audio)")
    raised_by = frozenset({"upload"})


class EmptyMedia(UnsupportedMedia):
    """Decodable, but holds nothing to work with (zero samples, zero frames)."""

    status = 422
    when = "decodable but empty (zero-length audio, a video without frames)"


class InvalidSamples(UnsupportedMedia):
    """Decodable, but the samples themselves are unusable (NaN or infinite values in float audio)."""

    status = 422
    when = "audio with NaN or infinite samples (the message gives the time of the first)"


class NotSdp(UnsupportedMedia):
    """A WebRTC offer's body came with another Content-Type than application/sdp."""

    when = "WebRTC: the offer's `Content-Type` is not `application/sdp`"
    raised_by = frozenset({"sdp_offer"})


class NoFaceDetected(MuseTalkError):
    status, code = 422, "no_face_detected"
    when = ("no face in the video, or none in over a fifth of the frames from the first with a face to the last "
            "(frames before the first and after the last are cut off); the message names the frame")
    raised_by = frozenset({"preprocess"})


class InvalidInput(MuseTalkError):
    status, code = 422, "invalid_input"
    when = ("a missing or malformed field or request body, audio shorter than one frame, a job id (or WebRTC "
            "session or viewer id) that is not of the form they are given (letters, digits, `-`, `_`; up to 64)")
    raised_by = frozenset({"upload", "job", "realtime", "live_session"})


class Unauthorized(MuseTalkError):
    status, code = 401, "unauthorized"
    when = ("`MUSETALK_API_KEY` is set and the request lacks `X-API-Key: <key>` or `Authorization: Bearer <key>` "
            "(health, probes and metrics need no key)")
    raised_by = frozenset({"keyed", "realtime"})


class RouteNotFound(MuseTalkError):
    """No route has this path (answered by the router, so no operation declares it)."""

    status, code = 404, "not_found"
    when = "no route has this path"
    raised_by = frozenset()


class CorsRefused(MuseTalkError):
    """A CORS preflight from a page whose origin MUSETALK_CORS_ORIGINS does not list (or asking for a
    method or header it may not use); its browser then sends nothing. OpenAPI has no preflights."""

    status, code = 400, "cors_refused"
    when = "a CORS preflight from an origin `MUSETALK_CORS_ORIGINS` does not list; the message names what it refused"
    raised_by = frozenset()


class MethodNotAllowed(MuseTalkError):
    """The path exists, not for this method; `Allow` lists every method it has."""

    status, code = 405, "method_not_allowed"
    when = ("the path exists but not for this method; `Allow` lists the methods it has (also a CORS preflight "
            "while `MUSETALK_CORS_ORIGINS` is unset)")
    raised_by = frozenset()


class NotReady(MuseTalkError):
    status, code = 503, "not_ready"
    when = ("the engine is still loading or failed to load, or the server is shutting down "
            "(`\"the server is shutting down\"`)")
    raised_by = frozenset({"device", "probe", "realtime", "realtime_open"})


class Busy(MuseTalkError):
    """The device cannot take this work on time now (device/scheduler.py); retry after `retry_after_s`."""

    status, code = 429, "busy"
    when = ("the device cannot take the work on time now; the `Retry-After` header says in how many seconds to "
            "try again. A paced stream is refused at once; a batch, an unpaced stream or a preprocess after "
            "waiting `MUSETALK_QUEUE_TIMEOUT_S`")
    raised_by = frozenset({"device", "realtime", "realtime_open"})
    response_headers: ClassVar[dict[str, str]] = {"Retry-After": "seconds to wait before trying again"}

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class WeightsError(MuseTalkError):
    """Model weights are missing or do not match the expected layout; names the file."""

    status, code = 500, "weights_error"
    when = "the model weights are missing or do not match the expected layout; the message names the file"


class EngineError(MuseTalkError):
    status, code = 500, "internal_error"


class RenderError(EngineError):
    """A render failed or produced the wrong number of frames; the trace is in the server log."""


class PreprocessTimeout(MuseTalkError):
    """Cluster mode: the Avatar resource was not Ready in time. It keeps going; poll GET /avatars/{id}."""

    status, code = 504, "preprocess_timeout"
    when = ("cluster mode: the Avatar was not Ready within `MUSETALK_PREPROCESS_TIMEOUT_S`; it carries on, poll "
            "`GET /avatars/{id}`")
    raised_by = frozenset({"preprocess"})


class InsufficientStorage(MuseTalkError):
    """The disk (or the process's file-size limit) ran out mid-write; nothing half-written is kept."""

    status, code = 507, "insufficient_storage"
    when = ("the disk filled (or a file-size limit was hit) while storing the upload, the avatar or the MP4; "
            "nothing half-written is kept")
    raised_by = frozenset({"upload"})


class AvatarCorrupt(MuseTalkError):
    """An avatar on disk cannot be read back (a truncated frame, a garbled manifest); names the file."""

    status, code = 500, "avatar_corrupt"
    when = ("that avatar's files on disk cannot be read back (a truncated frame or landmarks file, a garbled "
            "manifest); logged; other avatars are unaffected, and the list leaves out one whose manifest is "
            "unreadable. Preprocess it again with `overwrite=true`")
    raised_by = frozenset({"reads_avatar", "render", "realtime", "realtime_open"})


class SessionTimeout(MuseTalkError):
    """A real-time session idled past MUSETALK_REALTIME_IDLE_TIMEOUT_S or ran past its length cap."""

    status, code = 408, "timeout"
    when = ("real time: the session idled past `MUSETALK_REALTIME_IDLE_TIMEOUT_S` or ran past "
            "`MUSETALK_REALTIME_MAX_SESSION_S` (close code 4408)")
    raised_by = frozenset({"realtime"})


class JobNotFound(MuseTalkError):
    """No async job has this id: never made, discarded, or expired after MUSETALK_JOB_TTL_S."""

    status, code = 404, "job_not_found"
    when = "no async job has that id (never made, discarded, or expired)"
    raised_by = frozenset({"job"})


class JobNotFinished(MuseTalkError):
    """The job's result was asked for while it is still queued or running; poll GET /jobs/{id}."""

    status, code = 409, "job_not_finished"
    when = "`GET /jobs/{id}/result` while the job is queued or running; the message gives the frames done"
    raised_by = frozenset({"job_result"})


class JobFailed(MuseTalkError):
    """The job's result was asked for, but it failed or was cancelled: there is none."""

    status, code = 409, "job_failed"
    when = ("`GET /jobs/{id}/result` of a job that failed (its `error` is on `GET /jobs/{id}`) or was "
            "cancelled, or whose MP4 is no longer on the volume")
    raised_by = frozenset({"job_result"})


class JobLost(RenderError):
    """Cluster mode: every replica that held the job in turn stopped renewing its lease (killed, cut off)."""

    code = "job_lost"
    when = ("cluster mode, in a failed job's `error` only: `MUSETALK_JOB_ATTEMPTS` replicas in turn held the job "
            "and stopped renewing its lease (killed or cut off); submit it again")
    raised_by = frozenset()  # no route raises it: it is only ever a job's recorded error


class TooManyJobs(MuseTalkError):
    """MUSETALK_MAX_JOBS jobs are queued or running already; retry once one has finished."""

    status, code = 429, "too_many_jobs"
    when = "`MUSETALK_MAX_JOBS` async jobs are already queued or running"
    raised_by = frozenset({"async_batch"})


class InvalidOffer(MuseTalkError):
    """An SDP offer that does not parse, or lacks the transceivers or codecs its role needs."""

    status, code = 422, "invalid_sdp"
    when = ("WebRTC: the SDP offer does not parse, lacks a video transceiver that receives or the audio one "
            "its role needs, or offers neither H.264 nor VP8 video, or no Opus audio; the message says which")
    raised_by = frozenset({"sdp_offer"})


class SessionNotFound(MuseTalkError):
    """No live real-time session has this id (it ended, or never was)."""

    status, code = 404, "session_not_found"
    when = "WebRTC: no live real-time session (or viewer of one) has that id; it ended, or never was"
    raised_by = frozenset({"live_session"})


class TooManyViewers(MuseTalkError):
    """The session has MUSETALK_WEBRTC_MAX_VIEWERS viewers already."""

    status, code = 429, "too_many_viewers"
    when = "WebRTC: the session has `MUSETALK_WEBRTC_MAX_VIEWERS` viewers already; one must leave first"
    raised_by = frozenset({"viewer_join"})
