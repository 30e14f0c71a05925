"""The JSON bodies the service answers, as pydantic models: the routes' `response_model`s, so
FastAPI checks each body against its model and the OpenAPI schema is generated from them.

Routes pair them with `response_model_exclude_unset=True`: a key a body leaves out (an avatar's
`phase` outside cluster mode) stays out rather than coming back as null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorBody", "Health", "Live", "Ready", "AvatarInfo", "Avatar", "AvatarList", "Preprocessed", "Deleted", "WebRtcDeleted",
    "JobProgress", "Job",
]


class ErrorBody(BaseModel):
    """The one error shape of the service (errors.py)."""

    detail: str = Field(description="A human-readable message")
    code: str = Field(description="A machine code, stable across versions (docs/errors.md)")


class EngineModels(BaseModel):
    loaded: bool
    device: str


class Health(BaseModel):
    """The seed's status body, plus the engine's own facts."""

    status: Literal["running"]
    models: EngineModels
    loaded_avatars: list[str]
    engine: str
    engine_info: dict[str, Any] = Field(description="What the engine reports about itself beyond loaded and device")
    version: str
    avatar_source: Literal["local", "kubernetes"]
    active_streams: int = Field(description="MJPEG streams being sent now")


class Live(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    engine: str


class AvatarInfo(BaseModel):
    """The public facts of a stored avatar (avatars/info.py)."""

    # Engines add facts of their own to a manifest; the contract names the ones every avatar has.
    model_config = ConfigDict(extra="allow")

    frames: int
    fps: float
    width: int
    height: int
    size: list[int] = Field(min_length=2, max_length=2, description="[width, height]")
    bbox_shift: int
    engine: str
    engine_version: int | None = None
    face: dict[str, Any] | None = Field(None, description="Face box statistics")
    engine_info: dict[str, Any] | None = Field(None, description="The engine's facts, e.g. bbox_shift_range")
    source: dict[str, Any] | str | None = Field(None, description="The upload: its name and sha256")
    created_at: str | float | None = None
    preprocess_seconds: float | None = None


class Avatar(BaseModel):
    avatar_id: str
    loaded: bool = Field(description="In this replica's memory now")
    info: AvatarInfo | None = Field(None, description="Absent in cluster mode until a preprocessed avatar is on the "
                                                      "volume (during a spec edit: the earlier one, still served)")
    phase: str | None = Field(None, description="Cluster mode only: the Avatar's phase (Pending, Running, Ready, "
                                                "Failed)")
    message: str | None = Field(None, description="Cluster mode only: why the Avatar is in its phase")


class AvatarList(BaseModel):
    avatars: list[Avatar]


class Preprocessed(BaseModel):
    message: str = Field(description="`Avatar processed successfully`, or for a retry of the same upload "
                                     "`Avatar already processed (same video and bbox_shift)`")
    avatar_id: str
    info: AvatarInfo


class Deleted(BaseModel):
    message: Literal["Avatar deleted"]
    avatar_id: str


class WebRtcDeleted(BaseModel):
    """A WebRTC session ended (DELETE of its resource), or one of its viewers left."""

    message: str
    session_id: str
    viewer_id: str | None = None


class JobProgress(BaseModel):
    frames_done: int
    frames_total: int


class Job(BaseModel):
    """An async batch job (POST /inference/batch/{avatar_id}?async=true)."""

    job_id: str
    avatar_id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: JobProgress
    fps: float
    error: ErrorBody | None = Field(description="The error body, once failed")
    created_at: str = Field(description="ISO 8601, UTC")
    finished_at: str | None = Field(description="ISO 8601, UTC; null until the job ends")
    expires_at: str | None = Field(description="When the job and its MP4 are swept; null until the job ends")
    status_url: str
    result_url: str
