"""The project's error tree. The API maps it to HTTP in one place (api/errors.py).

Every error the service raises on purpose is a `MuseTalkError` whose class carries the HTTP
status and the machine `code` clients see in `{"detail": ..., "code": ...}` (`error_body`):

    MuseTalkError                      500 internal_error
    ├── InvalidAvatarId                422 invalid_avatar_id
    ├── AvatarNotFound                 404 avatar_not_found
    ├── AvatarExists                   409 avatar_exists
    ├── AvatarEngineMismatch           409 avatar_engine_mismatch
    ├── TooLarge                       413 too_large
    ├── UnsupportedMedia               415 unsupported_media
    │   ├── EmptyMedia                 422 unsupported_media
    │   └── InvalidSamples             422 unsupported_media   (NaN or infinite audio samples)
    ├── NoFaceDetected                 422 no_face_detected
    ├── InvalidInput                   422 invalid_input
    ├── Unauthorized                   401 unauthorized
    ├── NotReady                       503 not_ready     (loading, or draining for shutdown)
    ├── Busy                           429 busy          (the scheduler's refusal; Retry-After)
    ├── SessionTimeout                 408 timeout       (a real-time session idle or too long: 4408)
    ├── WeightsError                   500 weights_error
    ├── EngineError                    500 internal_error
    │   └── RenderError                500 internal_error   (a render that failed or fell short)
    ├── PreprocessTimeout              504 preprocess_timeout
    ├── InsufficientStorage            507 insufficient_storage (nothing half-written is left)
    ├── AvatarCorrupt                  500 avatar_corrupt       (that avatar alone, logged)
    ├── JobNotFound                    404 job_not_found
    ├── JobNotFinished                 409 job_not_finished
    ├── JobFailed                      409 job_failed
    └── TooManyJobs                    429 too_many_jobs

Anything else that escapes is a bug: the handler logs its trace and answers a generic 500.
"""

from __future__ import annotations

__all__ = [
    "error_body",
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
    "TooManyJobs",
]


def error_body(detail: str, code: str) -> dict[str, str]:
    """The one JSON error shape, everywhere: handlers, middleware, a stream's error part, the CLI."""
    return {"detail": detail, "code": code}


class MuseTalkError(Exception):
    """Base of every error the service raises on purpose. `code` is the machine code clients see."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, str]:
        return error_body(self.detail, self.code)

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the body (Busy: Retry-After)."""
        return {}


class InvalidAvatarId(MuseTalkError):
    status, code = 422, "invalid_avatar_id"


class AvatarNotFound(MuseTalkError):
    status, code = 404, "avatar_not_found"


class AvatarExists(MuseTalkError):
    status, code = 409, "avatar_exists"


class AvatarEngineMismatch(MuseTalkError):
    """An avatar prepared by one engine was asked for by another: its artifacts do not fit."""

    status, code = 409, "avatar_engine_mismatch"


class TooLarge(MuseTalkError):
    status, code = 413, "too_large"


class UnsupportedMedia(MuseTalkError):
    status, code = 415, "unsupported_media"


class EmptyMedia(UnsupportedMedia):
    """Decodable, but holds nothing to work with (zero samples, zero frames)."""

    status = 422


class InvalidSamples(UnsupportedMedia):
    """Decodable, but the samples themselves are unusable (NaN or infinite values in float audio)."""

    status = 422


class NoFaceDetected(MuseTalkError):
    status, code = 422, "no_face_detected"


class InvalidInput(MuseTalkError):
    status, code = 422, "invalid_input"


class Unauthorized(MuseTalkError):
    status, code = 401, "unauthorized"


class NotReady(MuseTalkError):
    status, code = 503, "not_ready"


class Busy(MuseTalkError):
    """The device cannot take this work on time now (scheduler.py); retry after `retry_after_s`."""

    status, code = 429, "busy"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class WeightsError(MuseTalkError):
    """Model weights are missing or do not match the expected layout; names the file."""

    status, code = 500, "weights_error"


class EngineError(MuseTalkError):
    status, code = 500, "internal_error"


class RenderError(EngineError):
    """A render failed or produced the wrong number of frames; the trace is in the server log."""


class PreprocessTimeout(MuseTalkError):
    """Cluster mode: the Avatar resource was not Ready in time. It keeps going; poll GET /avatars/{id}."""

    status, code = 504, "preprocess_timeout"


class InsufficientStorage(MuseTalkError):
    """The disk (or the process's file-size limit) ran out mid-write; nothing half-written is kept."""

    status, code = 507, "insufficient_storage"


class AvatarCorrupt(MuseTalkError):
    """An avatar on disk cannot be read back (a truncated frame, a garbled manifest); names the file."""

    status, code = 500, "avatar_corrupt"


class SessionTimeout(MuseTalkError):
    """A real-time session idled past MUSETALK_REALTIME_IDLE_TIMEOUT_S or ran past its length cap."""

    status, code = 408, "timeout"


class JobNotFound(MuseTalkError):
    """No async job has this id: never made, discarded, or expired after MUSETALK_JOB_TTL_S."""

    status, code = 404, "job_not_found"


class JobNotFinished(MuseTalkError):
    """The job's result was asked for while it is still queued or running; poll GET /jobs/{id}."""

    status, code = 409, "job_not_finished"


class JobFailed(MuseTalkError):
    """The job's result was asked for, but it failed or was cancelled: there is none."""

    status, code = 409, "job_failed"


class TooManyJobs(MuseTalkError):
    """MUSETALK_MAX_JOBS jobs are queued or running already; retry once one has finished."""

    status, code = 429, "too_many_jobs"
