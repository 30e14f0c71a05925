"""Settings: the one place the environment is read (MUSETALK_* variables and `.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["auto", "lite", "musetalk"]


class Settings(BaseSettings):
    """Every knob of the service. Values below the app factory and the CLI are explicit arguments."""

    model_config = SettingsConfigDict(env_prefix="MUSETALK_", env_file=".env", extra="ignore")

    # The seed's three variables.
    gpu_id: int = Field(0, ge=0)
    port: int = Field(8000, ge=1, le=65535)
    result_dir: Path = Path("./results")

    host: str = "127.0.0.1"
    engine: EngineName = "auto"
    fps: float = Field(25.0, gt=0, le=120)
    model_dir: Path = Path("./models")

    # Limits: a self-hosted server still must not be knocked over by one upload.
    max_upload_mb: float = Field(200.0, gt=0)
    max_audio_seconds: float = Field(600.0, gt=0)
    max_video_seconds: float = Field(120.0, gt=0)
    max_video_side: int = Field(1920, ge=64)
    # Checked on the header before decoding, then frame by frame: 4K UHD, and 120 s at 60 fps.
    max_video_pixels: int = Field(3840 * 2160, ge=64 * 64)
    max_video_frames: int = Field(7200, ge=1)
    api_key: str | None = None
    # Leftover uploads and MP4s (a killed request) older than this are swept.
    temp_ttl_s: float = Field(3600.0, gt=0)

    # Serving.
    jpeg_quality: int = Field(85, ge=10, le=100)
    stream_queue_frames: int = Field(16, ge=1)
    max_loaded_avatars: int = Field(4, ge=1)
    batch_size: int = Field(8, ge=1)
    # Browser pages on these origins may call the API (comma-separated, e.g.
    # "http://localhost:3000,https://app.example.com"); empty leaves CORS off.
    cors_origins: str = ""

    # Real-time sessions (WS /inference/realtime/{avatar_id}).
    realtime_idle_timeout_s: float = Field(60.0, gt=0)  # no message and nothing to say for this long: close 4408
    realtime_max_buffer_s: float = Field(30.0, gt=0)  # audio buffered ahead of playback, all utterances
    realtime_max_session_s: float = Field(3600.0, gt=0)  # a session's length cap

    # Capacity (device/scheduler.py): unpaced work waits this long for the device, then gets 429 busy.
    queue_timeout_s: float = Field(30.0, ge=0)
    max_queue: int = Field(64, ge=0)  # unpaced requests waiting at most; more get 429 at once
    max_realtime_streams: int = Field(0, ge=0)  # cap on paced streams and sessions; 0: by measure only
    device_workers: int = Field(0, ge=0)  # a CPU engine's parallel frame steps; 0: this process's cores
    shutdown_grace_s: float = Field(20.0, ge=0)  # SIGTERM: running work gets this long to finish

    # Async batch jobs (POST /inference/batch/{id}?async=true): kept this long after they finish.
    job_ttl_s: float = Field(3600.0, gt=0)
    job_workers: int = Field(1, ge=1)  # jobs rendering at once; the rest wait, queued
    max_jobs: int = Field(16, ge=1)  # queued + running; each holds its decoded audio in memory

    # Cluster mode: `local` runs preprocessing inline; `kubernetes` hands it to the operator.
    avatar_source: Literal["local", "kubernetes"] = "local"
    namespace: str = "default"
    preprocess_timeout_s: float = Field(900.0, gt=0)
    # The Avatar CRD (crds/avatars.musetalk.io.yaml) and how often to re-read one while waiting.
    crd_group: str = "musetalk.io"
    crd_version: str = "v1"
    kube_poll_s: float = Field(1.0, gt=0)

    @property
    def avatar_dir(self) -> Path:
        return self.result_dir / "avatars"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
