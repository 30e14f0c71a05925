"""FFmpeg's complaint in words a client may see: no server paths."""

from __future__ import annotations


def ffmpeg_reason(e: BaseException) -> str:
    reason = getattr(e, "strerror", None)
    return str(reason) if reason else type(e).__name__
