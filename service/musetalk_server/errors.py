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
    "InvalidSamples",
    "NoFaceDetected",
    "InvalidInput",
    "Unauthorized",
    "NotReady",
    "WeightsError",
    "EngineError",
    "PreprocessTimeout",
    "InsufficientStorage",
    "AvatarCorrupt",
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


class WeightsError(MuseTalkError):
    """Model weights are missing or do not match the expected layout; names the file."""

    status, code = 500, "weights_error"


class EngineError(MuseTalkError):
    status, code = 500, "internal_error"


class PreprocessTimeout(MuseTalkError):
    """Cluster mode: the Avatar resource was not Ready in time. It keeps going; poll GET /avatars/{id}."""

    status, code = 504, "preprocess_timeout"


class InsufficientStorage(MuseTalkError):
    """The disk (or the process's file-size limit) ran out mid-write; nothing half-written is kept."""

    status, code = 507, "insufficient_storage"


class AvatarCorrupt(MuseTalkError):
    """An avatar on disk cannot be read back (a truncated frame, a garbled manifest); names the file."""

    status, code = 500, "avatar_corrupt"
