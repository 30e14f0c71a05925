"""What clients are told about an avatar: typed views over its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AvatarInfo", "AvatarEntry", "PreprocessResult", "PROCESSED", "ALREADY_PROCESSED"]

PROCESSED = "Avatar processed successfully"  # the seed's message
# A retry of a finished preprocess (avatars/idempotency.py): the stored avatar, not recomputed.
ALREADY_PROCESSED = "Avatar already processed (same video and bbox_shift)"


@dataclass(frozen=True)
class AvatarInfo:
    """The public facts of a stored avatar (the manifest minus its bookkeeping)."""

    frames: int
    fps: float
    width: int
    height: int
    bbox_shift: int
    engine: str
    engine_version: int
    face: dict[str, Any]
    source: dict[str, Any]
    engine_info: dict[str, Any]
    created_at: str | None
    preprocess_seconds: float | None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> AvatarInfo:
        return cls(
            frames=int(manifest["frames"]), fps=float(manifest["fps"]),
            width=int(manifest["width"]), height=int(manifest["height"]),
            bbox_shift=int(manifest.get("bbox_shift", 0)), engine=str(manifest["engine"]),
            engine_version=int(manifest["engine_version"]), face=manifest.get("face") or {},
            source=manifest.get("source") or {}, engine_info=manifest.get("engine_info") or {},
            created_at=manifest.get("created_at"), preprocess_seconds=manifest.get("preprocess_seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames, "fps": self.fps, "width": self.width, "height": self.height,
            "bbox_shift": self.bbox_shift, "engine": self.engine, "engine_version": self.engine_version,
            "face": self.face, "source": self.source, "engine_info": self.engine_info,
            "created_at": self.created_at, "preprocess_seconds": self.preprocess_seconds,
            "size": [self.width, self.height],
        }


@dataclass(frozen=True)
class AvatarEntry:
    """One avatar as listed or shown. In cluster mode it also has the resource's phase."""

    avatar_id: str
    loaded: bool
    info: AvatarInfo | None
    phase: str | None = None  # cluster mode only: Pending, Running, Ready, Failed
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"avatar_id": self.avatar_id, "loaded": self.loaded}
        if self.phase is not None:
            out |= {"phase": self.phase, "message": self.message}
        if self.info is not None:
            out["info"] = self.info.to_dict()
        return out


@dataclass(frozen=True)
class PreprocessResult:
    """The answer to a preprocess, from the service, the CLI and the Kubernetes Job alike."""

    avatar_id: str
    info: AvatarInfo
    message: str = PROCESSED

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "avatar_id": self.avatar_id, "info": self.info.to_dict()}
