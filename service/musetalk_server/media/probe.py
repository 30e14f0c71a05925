"""FFmpeg's complaint in words a client may see (no server paths), and what a header declares."""

from __future__ import annotations

import av

# Headers estimate durations (VBR mp3 from its bitrate), so a header alone is refused only
# clearly over the limit; the decoder then enforces the exact limit as it goes.
DECLARED_SLACK = 1.02
DECLARED_SLACK_S = 1.0


def ffmpeg_reason(e: BaseException) -> str:
    reason = getattr(e, "strerror", None)
    return str(reason) if reason else type(e).__name__


def declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The duration the header claims, or None when it claims none."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def over_declared_limit(declared: float | None, limit: float) -> bool:
    return declared is not None and declared > limit * DECLARED_SLACK + DECLARED_SLACK_S
