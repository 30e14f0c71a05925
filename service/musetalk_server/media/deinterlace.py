"""Interlaced video made progressive, as players show it.

A camcorder's or a broadcast's 1080i frame holds two fields filmed 1/50 s (or 1/60 s) apart, its
even lines from one instant and its odd lines from the next. Shown as a picture, every moving
edge is a comb; an avatar made of such frames would show combs on every frame it streams, and
the face landmarks read them as ragged lips. FFmpeg's bwdif rebuilds each frame from its fields
(one frame out per frame in, at the frame's own time), as players do.
"""

from __future__ import annotations

import av
import av.filter

__all__ = ["Deinterlacer"]

# send_frame: one frame per frame (the avatar's clock is the stream's); deint=interlaced: frames
# the bitstream marks progressive pass untouched, so mixed content is fine.
_BWDIF = "mode=send_frame:parity=auto:deint=interlaced"


class Deinterlacer:
    """Frames of one stream, in decode order, out as shown: each frame itself while the stream is
    progressive; from its first interlaced frame on, every frame through bwdif, which gives each
    one back a frame later (it looks at the next), so `flush` gives the last one at the end."""

    def __init__(self, time_base) -> None:
        self._time_base = time_base
        self._graph: av.filter.Graph | None = None
        self._shape: tuple[int, int, str] | None = None
        self._refused = False  # bwdif refused the stream (a picture a few pixels small): shown as stored

    def shown(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        if self._refused or (self._graph is None and not frame.interlaced_frame):
            return [frame]
        shape = (frame.width, frame.height, frame.format.name)
        out = self.flush() if shape != self._shape else []  # a filter is made for one picture size
        try:
            if self._graph is None:
                self._graph, self._shape = self._new_graph(frame), shape
            self._graph.push(frame)
            return out + self._pull()
        except (av.FFmpegError, ValueError):
            self._graph, self._refused = None, True
            return [*out, frame]

    def flush(self) -> list[av.VideoFrame]:
        if self._graph is None:
            return []
        self._graph.push(None)
        out = self._pull()
        self._graph, self._shape = None, None
        return out

    def _new_graph(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or self._time_base)
        fields = graph.add("bwdif", _BWDIF)
        sink = graph.add("buffersink")
        source.link_to(fields)
        fields.link_to(sink)
        graph.configure()
        return graph

    def _pull(self) -> list[av.VideoFrame]:
        assert self._graph is not None
        out: list[av.VideoFrame] = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            assert isinstance(frame, av.VideoFrame)  # a video graph
            out.append(frame)
