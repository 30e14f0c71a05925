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


# Demuxers of bare streams, with no container to say how long they are: FFmpeg guesses a length
# from the first frames' bitrate (ADTS AAC always, an MP3 without a Xing header, raw H.264). The
# guess can be several times the truth: 9 s of AAC that opens with a second of silence "declares"
# 38 s. Their length is only what decoding finds.
GUESSED_LENGTH = frozenset({"aac", "mp3", "ac3", "eac3", "dts", "truehd", "h264", "hevc", "m4v", "mpegvideo"})


def declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The duration the header claims, or None when it claims none (or FFmpeg would only guess one)."""
    if container.format.name in GUESSED_LENGTH:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def over_declared_limit(declared: float | None, limit: float) -> bool:
    return declared is not None and declared > limit * DECLARED_SLACK + DECLARED_SLACK_S
