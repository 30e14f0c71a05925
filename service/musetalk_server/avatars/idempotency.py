"""Safe retries of a preprocess: the source's hash, and whether a request would rebuild an avatar.

A client that times out while a preprocess runs cannot tell whether it finished. Its retry
(same id, same video, same bbox_shift) must therefore succeed without `overwrite`, with the
avatar that is already there, instead of a 409 that only `overwrite` gets past. The video is
recognised by the sha256 of its bytes, stored in the manifest (`source.sha256`) and, in
cluster mode, on the Avatar resource (`SOURCE_ANNOTATION`). An avatar without a hash (made
before hashing, or applied with kubectl) is never taken for the same one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["SOURCE_ANNOTATION", "file_sha256", "manifest_differences", "resource_differences"]

SOURCE_ANNOTATION = "musetalk.io/source-sha256"
_CHUNK = 1 << 20
_NO_HASH = "its source was never hashed (made before sources were, or applied with kubectl)"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (uploads can be hundreds of MB). Blocking."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_differences(manifest: dict[str, Any], *, sha256: str, bbox_shift: int, engine: str,
                         engine_version: int, fps: float) -> list[str]:
    """Why a stored avatar is not what this request would build; empty when it is the same.

    The engine and the frame rate count too: after a change of either, the same video makes
    another avatar, and the stored one would not even load.
    """
    stored = (manifest.get("source") or {}).get("sha256")
    return _differences(
        stored, sha256,
        ("bbox_shift", int(manifest.get("bbox_shift", 0)), bbox_shift),
        ("engine", f"{manifest.get('engine')} v{manifest.get('engine_version')}", f"{engine} v{engine_version}"),
        ("fps", float(manifest.get("fps", 0)), float(fps)),
    )


def resource_differences(resource: dict[str, Any], *, sha256: str, spec: dict[str, Any]) -> list[str]:
    """The same question for an Avatar resource against the spec this request would submit."""
    stored = (resource["metadata"].get("annotations") or {}).get(SOURCE_ANNOTATION)
    current = resource.get("spec") or {}
    return _differences(
        stored, sha256,
        ("bbox_shift", int(current.get("bboxShift", 0)), int(spec["bboxShift"])),
        ("engine", current.get("engine"), spec["engine"]),
        ("fps", float(current.get("fps") or 0), float(spec["fps"])),
    )


def _differences(stored_sha: str | None, sha256: str, *fields: tuple[str, Any, Any]) -> list[str]:
    out = [_NO_HASH] if stored_sha is None else ["it was made from a different video"] if stored_sha != sha256 else []
    out += [f"its {name} is {have}, not {want}" for name, have, want in fields if have != want]
    return out
