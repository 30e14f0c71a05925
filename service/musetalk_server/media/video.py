"""Video decode onto a fixed output frame rate.

Any container and codec FFmpeg knows (mp4, mov, webm, mkv; h264, mpeg4, vp9), and still
images (png, jpg), which give a one-frame clip. Source timestamps are mapped onto the output
clock by taking, for each output tick, the latest source frame shown at that instant; that is
how a 22.13 fps clip becomes a steady 25 fps avatar without speeding it up.

Frames come out as they are shown, not as they are stored: a phone keeps a portrait video (or
photo) as its sensor saw it, on its side, and marks how to turn it (the MP4's display matrix, a
JPEG's EXIF orientation); an anamorphic video (DV, HDV, a PAL or NTSC DVD's 16:9) stores pixels
that are shown wider or narrower than they are tall (its sample aspect ratio). Every player
applies both, and PyAV neither; a face read as stored would be sideways or squeezed. Interlaced
video (a camcorder's or a broadcast's 1080i) is deinterlaced, as players do (deinterlace.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from ..errors import TooLarge, UnsupportedMedia
from .deinterlace import Deinterlacer
from .probe import declared_seconds, ffmpeg_reason, over_declared_limit

__all__ = ["VideoClip", "read_video"]

_EPS = 1e-6  # seconds; absorbs timestamp rounding so a frame exactly on a tick counts for it
# Quarter turns clockwise -> how cv2 makes them. A sideways face would be measured sideways
# (FaceMesh's mouth measures assume an upright head), and rendered sideways.
_TURNS = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}
MAX_PIXEL_ASPECT = 4.0  # a sample aspect ratio (or its inverse) beyond this is not honoured
# A photo's EXIF Orientation -> the stored picture as shown. The display matrix FFmpeg makes of a
# mirrored one (2, 4, 5, 7: a front camera's selfie, some editors) loses its mirror in PyAV's angle:
# 2, a left-right mirror, reads as half a turn, so the face came out upside down; 4 as none.
_EXIF_SHOWN: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda image: cv2.flip(image, 1),
    3: lambda image: cv2.rotate(image, cv2.ROTATE_180),
    4: lambda image: cv2.flip(image, 0),
    5: cv2.transpose,
    6: lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    7: lambda image: cv2.flip(cv2.transpose(image), -1),
    8: lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


@dataclass(frozen=True)
class VideoClip:
    frames: list[np.ndarray]  # (H, W, 3) uint8 BGR at `fps`
    fps: float
    source_fps: float | None  # None for a still image
    source_frames: int
    duration_s: float
    # Presentation time of the first frame on the container's clock. Frame 0 is shown at it, so
    # the soundtrack is read from it too (media/audio.py `soundtrack`): a stream that starts
    # after its audio (common in camera and phone files) would otherwise play out of sync.
    start_s: float = 0.0
    # Source frames left out because the picture changed size mid-stream (a browser's recording
    # when the camera's resolution changes): an avatar's frames share one size, so the longest
    # stretch at one size is kept, `source_frames` and `duration_s` being that stretch's.
    other_size_frames: int = 0

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


@dataclass(frozen=True)
class _Limits:
    seconds: float | None
    side: int | None
    pixels: int | None
    frames: int | None
    photo_pixels: int | None = None  # a still image's one frame may have this many instead

    def pixels_of(self, index: int, photo: bool) -> int | None:
        """The pixel limit of frame `index` (0 for the header's size, which is the first frame's)."""
        if photo and index == 0 and self.photo_pixels is not None:
            return max(self.photo_pixels, self.pixels or 0)
        return self.pixels


def read_video(
    path: Path,
    fps: float,
    *,
    max_seconds: float | None = None,
    max_side: int | None = None,
    max_pixels: int | None = None,
    max_frames: int | None = None,
    max_photo_pixels: int | None = None,
) -> VideoClip:
    """Decode `path` and resample its timeline to `fps` (nearest previous frame).

    Frames larger than `max_side` on their long edge are scaled down, keeping the aspect.
    Raises TooLarge for a stream over `max_pixels` per frame (`max_photo_pixels` for a still
    image's one frame: a phone's 12 or 48 MP photo decodes once, a video's frames 25 times a
    second), `max_frames` source frames or `max_seconds`: from the header when it says so, else as
    soon as decoding gets there.
    """
    limits = _Limits(max_seconds, max_side, max_pixels, max_frames, max_photo_pixels)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise UnsupportedMedia(f"not a decodable video or image ({ffmpeg_reason(e)})") from e
    with container:
        if not container.streams.video:
            raise UnsupportedMedia("the file has no video stream")
        stream = container.streams.video[0]
        photo = _is_photo(container)
        _check_declared(container, stream, limits, photo)
        rate = float(stream.average_rate) if stream.average_rate else None
        timed = _decode_timed(container, stream, rate, limits, photo, _exif_orientation(path))
    if not timed:
        raise UnsupportedMedia("the video holds no decodable frames")
    kept = _longest_one_size(timed)
    if len(kept) == 1:
        return VideoClip([kept[0][1]], fps, None, 1, 0.0, start_s=kept[0][0], other_size_frames=len(timed) - len(kept))
    frames, duration = _resample(kept, fps, rate)
    # A header without a rate (a browser's WebM) still has timestamps to tell it.
    span = kept[-1][0] - kept[0][0]
    source_fps = rate or ((len(kept) - 1) / span if span > 0 else None)
    return VideoClip(frames, fps, source_fps, len(kept), duration, start_s=kept[0][0],
                     other_size_frames=len(timed) - len(kept))


def _longest_one_size(timed: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """The longest run of consecutive frames of one size (all of them, mostly)."""
    best, start = (0, 0), 0
    for i in range(1, len(timed) + 1):
        if i == len(timed) or timed[i][1].shape != timed[start][1].shape:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = i
    return timed[best[0]:best[1]]


# HEIF's brands of a still image (an iPhone's HEIC, an AVIF), which FFmpeg reads with its MP4 demuxer;
# not their sequence brands (msf1, hevs, avis: animations).
_STILL_BRANDS = frozenset({"heic", "heix", "mif1", "avif"})


def _is_photo(container) -> bool:
    """A still image's file (jpg, png, webp, bmp, tiff... with FFmpeg's image demuxers; HEIC, AVIF)."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe") or container.metadata.get("major_brand") in _STILL_BRANDS


def _check_declared(container, stream, limits: _Limits, photo: bool) -> None:
    """Refuse what the header already says is too big, before a single frame is decoded."""
    w, h = stream.codec_context.width, stream.codec_context.height
    pixels = limits.pixels_of(0, photo)
    if pixels is not None and w * h > pixels:
        raise TooLarge(f"video frames are {w}x{h} ({w * h} pixels); the limit is {pixels} pixels")
    if limits.frames is not None and stream.frames > limits.frames:
        raise TooLarge(f"video declares {stream.frames} frames; the limit is {limits.frames}")
    declared = declared_seconds(container, stream)
    if limits.seconds is not None and over_declared_limit(declared, limits.seconds):
        raise TooLarge(f"video declares {declared:.0f} s; the limit is {limits.seconds:g} s")


def _check_frame(index: int, frame: av.VideoFrame, t: float, start: float | None, limits: _Limits,
                 photo: bool) -> None:
    """The same limits, frame by frame: headers can lie, and sizes can change mid-stream."""
    if limits.frames is not None and index >= limits.frames:
        raise TooLarge(f"video has more than the limit of {limits.frames} frames")
    pixels = limits.pixels_of(index, photo)
    if pixels is not None and frame.width * frame.height > pixels:
        raise TooLarge(f"video frame {index} is {frame.width}x{frame.height}; the limit is {pixels} pixels")
    if limits.seconds is not None and start is not None and t - start > limits.seconds:
        raise TooLarge(f"video is longer than the limit of {limits.seconds:g} s")


def _decode_timed(container, stream, rate, limits: _Limits, photo: bool,
                  orientation: int | None) -> list[tuple[float, np.ndarray]]:
    timed: list[tuple[float, np.ndarray]] = []
    pixel_aspect, fields = _pixel_aspect(stream), Deinterlacer(stream.time_base)

    def keep(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            t = frame.time if frame.time is not None else len(timed) / (rate or 25.0)
            timed.append((t, _fit(_as_shown(frame, pixel_aspect, orientation), limits.side)))

    try:
        for index, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else index / (rate or 25.0)
            _check_frame(index, frame, t, timed[0][0] if timed else None, limits, photo)
            keep(fields.shown(frame))
        keep(fields.flush())
    except av.FFmpegError as e:
        with contextlib.suppress(av.FFmpegError):
            keep(fields.flush())
        if len(timed) < 2:
            raise UnsupportedMedia(f"video could not be decoded ({ffmpeg_reason(e)})") from e
        # A truncated tail after good frames: keep what decoded.
    timed.sort(key=lambda item: item[0])  # decode order is presentation order only without B-frames
    return timed


def _pixel_aspect(stream) -> float:
    """Width over height of one stored pixel as shown: the container's or, failing it, the
    bitstream's sample aspect ratio; 1 where neither says (0/1 means unknown)."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar:
            return float(sar)
    return 1.0


def _exif_orientation(path: Path) -> int | None:
    """A photo's EXIF Orientation (1-8); None for a video, or an image without one."""
    try:
        with Image.open(path) as image:  # reads the header and its tags, not the picture
            value = image.getexif().get(0x0112)
    except Exception:  # not an image Pillow knows, or tags it cannot parse: FFmpeg's reading stands
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _as_shown(frame: av.VideoFrame, pixel_aspect: float, orientation: int | None = None) -> np.ndarray:
    """The frame as players show it: its pixels made square, then turned. A photo's EXIF
    `orientation` says how, with its mirror; else `rotation`, the display matrix's angle,
    counterclockwise in degrees (FFmpeg's convention): -90 for a phone held upright, whose picture
    must turn a quarter clockwise."""
    image: np.ndarray = frame.to_ndarray(format="bgr24")
    # DV's 10:11 and 40:33, 16:9 DVD's 64:45 and 16:11, HDV's 4:3 are all well inside these bounds;
    # a ratio beyond them is a broken header, shown as stored.
    if abs(pixel_aspect - 1.0) > 0.01 and 1 / MAX_PIXEL_ASPECT <= pixel_aspect <= MAX_PIXEL_ASPECT:
        h, w = image.shape[:2]
        # Made square by shrinking one side, never by growing the other: a header cannot make a
        # frame bigger than the pixel limit checked it at. Even sides, for yuv420p encoders.
        size = (w, round(h / pixel_aspect / 2) * 2) if pixel_aspect > 1 else (round(w * pixel_aspect / 2) * 2, h)
        image = cv2.resize(image, (max(size[0], 2), max(size[1], 2)), interpolation=cv2.INTER_AREA)
    if orientation is not None:
        shown = _EXIF_SHOWN.get(orientation)
        return image if shown is None else shown(image)
    # A degenerate matrix (all zeros) has no angle; PyAV then reads one of -2**31. Players show such
    # a frame as stored, and so does this.
    rotation = frame.rotation if abs(frame.rotation) <= 360 else 0
    turn = _TURNS.get(round(-rotation / 90) % 4)
    return image if turn is None else cv2.rotate(image, turn)


def _fit(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = frame.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    # Even sizes keep yuv420p encoders happy downstream.
    size = (max(2, round(w * scale) // 2 * 2), max(2, round(h * scale) // 2 * 2))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _resample(timed: list[tuple[float, np.ndarray]], fps: float, rate: float | None) -> tuple[list[np.ndarray], float]:
    start = timed[0][0]
    times = [t - start for t, _ in timed]
    # The last frame stays on screen for one source frame interval.
    last_interval = 1.0 / rate if rate else (times[-1] - times[-2])
    duration = times[-1] + last_interval
    n_out = max(1, math.floor(duration * fps + _EPS))
    frames, j = [], 0
    for k in range(n_out):
        tick = k / fps
        while j + 1 < len(times) and times[j + 1] <= tick + _EPS:
            j += 1
        frames.append(timed[j][1])
    return frames, duration
