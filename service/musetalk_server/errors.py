"""The project's error tree. The API maps it to HTTP in one place (api/errors.py)."""

from __future__ import annotations

__all__ = [
    "MuseTalkError",
    "InvalidAvatarId",
    "AvatarNotFound",
    "AvatarExists",
    "AvatarEngineMismatch",
    "TooLarge",
    "UnsupportedMedia",
    "EmptyMedia",
    "NoFaceDetected",
    "InvalidInput",
    "Unauthorized",
    "NotReady",
    "WeightsError",
    "EngineError",
    "PreprocessTimeout",
    "SessionTimeout",
    "Busy",
]


class MuseTalkError(Exception):
    """Base of every error the service raises on purpose. `code` is the machine code clients see."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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


class NoFaceDetected(MuseTalkError):
    status, code = 422, "no_face_detected"


class InvalidInput(MuseTalkError):
    status, code = 422, "invalid_input"


class Unauthorized(MuseTalkError):
    status, code = 401, "unauthorized"


class NotReady(MuseTalkError):
    status, code = 503, "not_ready"


class WeightsError(MuseTalkError):
    """Model weights are missing or do not match the expected layout; names the file."""

    status, code = 500, "weights_error"


class EngineError(MuseTalkError):
    status, code = 500, "internal_error"


class PreprocessTimeout(MuseTalkError):
    """Cluster mode: the Avatar resource was not Ready in time. It keeps going; poll GET /avatars/{id}."""

    status, code = 504, "preprocess_timeout"


class SessionTimeout(MuseTalkError):
    """A real-time session idled past MUSETALK_REALTIME_IDLE_TIMEOUT_S or ran past its length cap."""

    status, code = 408, "timeout"


class Busy(MuseTalkError):
    """No capacity for another session or job now; try again later (WebSocket close 4429)."""

    status, code = 429, "busy"
