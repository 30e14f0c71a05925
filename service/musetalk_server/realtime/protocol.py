"""The real-time wire format's old address (see this package's docstring)."""

from ..render.realtime.protocol import LAST, SPEAKING, UNDERRUN, FrameHeader, unpack_frame

__all__ = ["LAST", "SPEAKING", "UNDERRUN", "FrameHeader", "unpack_frame"]
