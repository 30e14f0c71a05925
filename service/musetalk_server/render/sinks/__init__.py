"""Sinks over one render job's frame iterator: MJPEG parts, an MP4 file (and real-time sessions)."""

from __future__ import annotations

import logging
from typing import NoReturn

from ...errors import MuseTalkError, RenderError

__all__ = ["as_render_error", "reraise_as_render_error", "RENDER_FAILED"]

log = logging.getLogger(__name__)
RENDER_FAILED = "rendering failed; the server log has the details"


def as_render_error(error: BaseException, what: str, detail: str = RENDER_FAILED) -> BaseException:
    """Our errors (and cancellation) pass as they are; anything else is logged with its trace
    and becomes a RenderError saying `detail`: the client learns that it failed, never how."""
    if isinstance(error, MuseTalkError) or not isinstance(error, Exception):
        return error
    log.error("%s failed", what, exc_info=error)
    return RenderError(detail)


def reraise_as_render_error(error: BaseException, what: str) -> NoReturn:
    mapped = as_render_error(error, what)
    if mapped is error:
        raise error
    raise mapped from error
