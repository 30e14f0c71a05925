"""Real-time sessions: audio streamed in as it is spoken, frames with their audio streamed out."""

from .protocol import (
    HEADER_BYTES,
    LAST,
    MAGIC,
    SPEAKING,
    UNDERRUN,
    FrameHeader,
    pack_frame,
    unpack_frame,
)

__all__ = ["HEADER_BYTES", "LAST", "MAGIC", "SPEAKING", "UNDERRUN", "FrameHeader", "pack_frame", "unpack_frame"]
