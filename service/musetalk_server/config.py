"""Settings: the one place the environment is read (MUSETALK_* variables and `.env`).

Each field's description is its documentation: docs/configuration.md's table is generated from
this class (`python scripts/docs_tables.py`), and a test fails when the two differ.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["auto", "lite", "musetalk"]


class Settings(BaseSettings):
    """Every knob of the service. Values below the app factory and the CLI are explicit arguments."""

    model_config = SettingsConfigDict(env_prefix="MUSETALK_", env_file=".env", extra="ignore")

    # The seed's three variables.
    gpu_id: int = Field(0, ge=0, description="CUDA device index for the musetalk engine")
    port: int = Field(8000, ge=1, le=65535, description="listening port")
    result_dir: Path = Field(Path("./results"), description=(
        "storage: avatars in `avatars/`, async job MP4s in `jobs/`, transient uploads and outputs beside them"))

    host: str = Field("127.0.0.1", description="listening address (`0.0.0.0` in the container image)")
    engine: EngineName = Field("auto", description=(
        "`auto` takes `musetalk` when its weights check out and CUDA is present, else `lite`; `musetalk` with "
        "missing weights refuses to start and names the files"))
    fps: float = Field(25.0, gt=0, le=120, description=(
        "frame rate of new avatars: source videos are re-timed onto it. An avatar always renders at the rate it "
        "was preprocessed at (its `info.fps`, the `X-Frame-Rate` header); a mismatch is logged"))
    model_dir: Path = Field(Path("./models"), description="MuseTalk weights in the upstream layout")

    # Limits: a self-hosted server still must not be knocked over by one upload.
    max_upload_mb: float = Field(200.0, gt=0, description="largest upload")
    max_audio_seconds: float = Field(600.0, gt=0, description="longest driving audio")
    max_video_seconds: float = Field(120.0, gt=0, description="longest source video")
    max_video_side: int = Field(1920, ge=64, description="larger source frames are scaled down to this long edge")
    # Checked on the header before decoding, then frame by frame: 4K UHD, and 120 s at 60 fps.
    max_video_pixels: int = Field(3840 * 2160, ge=64 * 64, description=(
        "largest source frame (3840×2160) before any scaling; checked on the header before a frame is decoded"))
    max_image_pixels: int = Field(8192 * 6144, ge=64 * 64, description=(
        "largest still image (a 50 MP phone photo), which is decoded once and then scaled like a video's frames; "
        "MUSETALK_MAX_VIDEO_PIXELS when that is larger"))
    max_video_frames: int = Field(7200, ge=1, description="most source frames decoded (120 s at 60 fps)")
    api_key: str | None = Field(None, description="when set, required on avatar, inference and job endpoints")
    temp_ttl_s: float = Field(3600.0, gt=0, description=(
        "leftover uploads and MP4s (from a killed process or request) older than this are removed, checked every "
        "quarter of it (at most 5 minutes apart); in local mode all of them go at start-up; in cluster mode an "
        "upload an Avatar resource still reads (its videoPath) stays until the Avatar is deleted"))

    # Serving.
    jpeg_quality: int = Field(85, ge=10, le=100, description="MJPEG quality")
    stream_queue_frames: int = Field(16, ge=1, description=(
        "frames buffered per stream before the engine waits for the client"))
    max_loaded_avatars: int = Field(4, ge=1, description="avatars kept in memory (least recently used leave first)")
    batch_size: int = Field(8, ge=1, description=(
        "frames per device call (musetalk), shared by every stream with frames due"))
    cors_origins: str = Field("", description=(
        "comma-separated origins (`https://app.example.com,http://localhost:3000`) whose pages may call the API; "
        "empty leaves CORS off. Preflights then succeed, and `X-Frame-Rate`, `X-Frame-Count`, "
        "`X-Audio-Duration-Ms`, `Content-Disposition`, `Location` and `Retry-After` are exposed to scripts. "
        "A browser still sends another origin's simple POSTs (a form upload) and only hides the answer: "
        "set `MUSETALK_API_KEY` where pages you do not trust can reach the server"))

    # Real-time sessions (WS /inference/realtime/{avatar_id}).
    realtime_idle_timeout_s: float = Field(60.0, gt=0, description=(
        "a real-time session with no message and nothing to say for this long closes with 4408"))
    realtime_max_buffer_s: float = Field(30.0, gt=0, description=(
        "audio a real-time session buffers ahead of playback, all utterances together; past it a chunk is "
        "dropped with a `too_large` event"))
    realtime_max_session_s: float = Field(3600.0, gt=0, description="a real-time session's length cap (close 4408)")

    # WebRTC (POST /inference/webrtc/...; docs/webrtc.md).
    webrtc_ice_servers: str = Field("", description=(
        "comma-separated STUN and TURN URLs the server's peers gather candidates from "
        "(`stun:stun.example.com:3478,turn:turn.example.com:3478?transport=udp`); at most one of each is used. "
        "Empty: host candidates only (loopback, a LAN, `hostNetwork`)"))
    webrtc_turn_username: str | None = Field(None, description="the TURN server's username (from a Secret in Kubernetes)")
    webrtc_turn_credential: str | None = Field(None, description="the TURN server's password (from a Secret in Kubernetes)")
    webrtc_max_viewers: int = Field(10, ge=0, description=(
        "viewers a session may have at once (its feeder not counted); the next gets 429 `too_many_viewers`"))
    webrtc_viewer_token_ttl_s: float = Field(300.0, gt=0, description=(
        "how long the `viewer_token` of a session's `ready` event lets new viewers join without the API key"))
    webrtc_consent_timeout_s: int = Field(6, ge=2, description=(
        "a peer that stops answering ICE consent checks (sent every second) for this long is dropped and its "
        "resources freed"))
    webrtc_video_crf: int = Field(26, ge=0, le=51, description=(
        "H.264 (and VP8) constant rate factor of a session's video: lower is better and larger"))
    webrtc_max_video_kbps: int = Field(1500, ge=100, description=(
        "the video's peak rate (the encoder's VBV cap), so no second of it floods a viewer's link"))
    webrtc_x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast"] = Field(
        "superfast", description="x264's speed preset for a session's H.264 (always with `tune=zerolatency`)")

    # Capacity (device/scheduler.py).
    queue_timeout_s: float = Field(30.0, ge=0, description=(
        "how long a batch, an unpaced stream or a preprocess waits for the device before 429 `busy`"))
    max_queue: int = Field(64, ge=0, description="requests that may wait at once; the next gets 429 `busy` at once")
    max_realtime_streams: int = Field(0, ge=0, description=(
        "a cap on paced streams and real-time sessions at once; `0`: admission by measured capacity alone"))
    device_workers: int = Field(0, ge=0, description=(
        "frame steps a CPU engine runs at once; `0`: the cores this process may use (set it to a container's CPU "
        "limit, which the affinity mask does not show)"))
    shutdown_grace_s: float = Field(20.0, ge=0, description=(
        "on SIGTERM, how long running streams get to finish before they end with their error part"))

    # Async batch jobs (POST /inference/batch/{id}?async=true).
    job_ttl_s: float = Field(3600.0, gt=0, description="how long a finished async job and its MP4 are kept")
    job_workers: int = Field(1, ge=1, description="async jobs rendering at once; the others wait `queued`")
    max_jobs: int = Field(16, ge=1, description=(
        "async jobs queued or running at once (each holds its decoded audio in memory)"))

    # Cluster mode.
    avatar_source: Literal["local", "kubernetes"] = Field("local", description=(
        "`local` preprocesses inline; `kubernetes` hands preprocessing to the operator (cluster mode)"))
    namespace: str = Field("default", description="cluster mode: the namespace of the Avatar resources")
    preprocess_timeout_s: float = Field(900.0, gt=0, description=(
        "cluster mode: how long a preprocess waits for its Avatar to be Ready before 504 `preprocess_timeout`"))
    crd_group: str = Field("musetalk.io", description="cluster mode: the Avatar CRD's group "
                                                      "(crds/avatars.musetalk.io.yaml)")
    crd_version: str = Field("v1", description="cluster mode: the Avatar CRD's version")
    kube_poll_s: float = Field(1.0, gt=0, description="cluster mode: how often a waiting preprocess re-reads its Avatar")
    # Cluster mode, several replicas (docs/kubernetes.md, "Many replicas").
    replica_name: str = Field("", description=(
        "cluster mode: this replica's name, in the leases of the jobs it renders and the `X-Replica` header of "
        "its answers; empty: the host name (in a pod, the pod's name)"))
    avatar_recheck_s: float = Field(1.0, ge=0, description=(
        "cluster mode: how long a replica trusts its last read of an Avatar resource before it serves the avatar "
        "again; a delete or overwrite through any replica (or kubectl) is seen by every replica within this"))
    job_heartbeat_s: float = Field(5.0, gt=0, description=(
        "cluster mode: how often a replica renews the lease of each async job it holds (and reports its "
        "progress), and looks for jobs to take over"))
    job_lease_s: float = Field(20.0, gt=0, description=(
        "cluster mode: a job whose lease is not renewed for this long is taken over by another replica, which "
        "renders it again from its first frame"))
    job_attempts: int = Field(3, ge=1, description=(
        "cluster mode: replicas that may hold one async job in turn; when the last one's lease runs out too, "
        "the job fails with `job_lost`"))

    @property
    def avatar_dir(self) -> Path:
        return self.result_dir / "avatars"

    @property
    def replica(self) -> str:
        """This process's name among the replicas: MUSETALK_REPLICA_NAME, else the host (pod) name."""
        return self.replica_name or socket.gethostname()

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
