"""Uploads land in a temporary file next to the store, never fully in memory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from ..disk.faults import disk_writes
from ..errors import TooLarge

__all__ = ["saved_upload"]

_CHUNK = 1 << 20


@asynccontextmanager
async def saved_upload(upload: UploadFile, folder: Path, limit: int) -> AsyncIterator[Path]:
    """Copy `upload` to a temp file under `folder` (size-checked), yield its path, then delete it."""
    if upload.size is not None and upload.size > limit:
        raise TooLarge(f"upload is {upload.size} bytes; the limit is {limit}")
    suffix = Path(upload.filename or "").suffix[:16]
    with disk_writes("the upload"):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=folder)
    path = Path(name)
    try:
        with disk_writes("the upload"), os.fdopen(fd, "wb") as out:
            size = 0
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"upload exceeds the limit of {limit} bytes")
                await run_in_threadpool(out.write, chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)
