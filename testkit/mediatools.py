"""Test helpers: transcode shared clips into other formats, parse MJPEG, read MP4s back."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def transcode_audio(src: Path, dst: Path, codec: str, *, rate: int, layout: str = "mono",
                    fmt: str | None = None, seconds: float | None = None) -> Path:
    """Re-encode the audio of `src` into `dst` with `codec` (e.g. libmp3lame, aac, libopus, flac)."""
    from musetalk_server.media.audio import decode_audio

    samples = decode_audio(src, rate=rate)
    if seconds is not None:
        samples = samples[: int(seconds * rate)]
    channels = 2 if layout == "stereo" else 1
    with av.open(str(dst), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec == "pcm_s24le":
            stream.format = "s32"
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        for start in range(0, samples.size, 1024):
            block = np.repeat(samples[None, start:start + 1024], channels, axis=0)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            frame.sample_rate = rate
            for chunk in resampler.resample(frame):
                out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return dst


def write_video(frames: list[np.ndarray], dst: Path, codec: str, fps: float, fmt: str | None = None,
                pix_fmt: str = "yuv420p", pixel_aspect: Fraction | None = None, first_frame: int | None = None,
                interlaced: bool = False) -> Path:
    """`frames` encoded; `pixel_aspect`: their sample aspect ratio, for an anamorphic video;
    `first_frame`: the first one's place on the stream's 1/fps clock (the encoder's own otherwise);
    `interlaced`: coded as fields (frames from `weave`), top field first, as a 1080i camera does."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(dst), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        if interlaced:
            stream.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        for i, f in enumerate(frames):
            image = av.VideoFrame.from_ndarray(f, format="bgr24")
            if first_frame is not None:
                image.time_base, image.pts = 1 / rate, first_frame + i
            out.mux(stream.encode(image))
        out.mux(stream.encode(None))
    return dst


def weave(pictures: list[np.ndarray]) -> list[np.ndarray]:
    """Interlaced frames of pictures filmed at twice their rate: each frame's even lines from one
    picture, its odd lines from the next, as a camera films two fields per frame."""
    frames = []
    for top, bottom in zip(pictures[::2], pictures[1::2], strict=False):
        frame = top.copy()
        frame[1::2] = bottom[1::2]
        frames.append(frame)
    return frames


def write_size_change(dst: Path, first: list[np.ndarray], then: list[np.ndarray], fps: int = 25) -> Path:
    """One H.264 stream in MPEG-TS whose frames change size after `first` (as a browser's recording
    does when the camera's resolution changes): two encodes, the second's clock going on from the
    first's, joined byte for byte."""
    parts = []
    for frames, start in ((first, 0), (then, len(first) + 2)):  # +2: the muxer's own delay
        part = write_video(frames, dst.with_suffix(f".{start}.ts"), "libx264", fps, "mpegts", first_frame=start)
        parts.append(part.read_bytes())
        part.unlink()
    dst.write_bytes(b"".join(parts))
    return dst


def with_display_rotation(mp4: Path, degrees: int | None) -> Path:
    """`mp4` (one track) marked, as a phone marks a portrait video, to be shown turned by `degrees`
    counterclockwise (FFmpeg's convention: a phone held upright records -90): its track header's
    matrix is rewritten in place. What players show is the stored picture turned that way.
    `degrees` None writes a degenerate matrix (all zeros), as a broken or hostile file may."""
    data = bytearray(mp4.read_bytes())
    at = data.index(b"tkhd") + 4  # the box's version byte
    # After version/flags: two times, track id, reserved, duration (32 or 64 bits each but the
    # id and reserved), then 8 reserved bytes, layer, group, volume, 2 reserved: the matrix.
    matrix = at + 4 + (32 if data[at] == 1 else 20) + 16
    if degrees is None:
        data[matrix:matrix + 36] = bytes(36)
        mp4.write_bytes(bytes(data))
        return mp4
    turn = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees % 360]  # (cos, sin)
    cos, sin = (v << 16 for v in turn)
    data[matrix:matrix + 36] = struct.pack(">9i", cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30)
    mp4.write_bytes(bytes(data))
    return mp4


def jpeg_with_orientation(image: np.ndarray, dst: Path, orientation: int) -> Path:
    """`image` as a JPEG whose EXIF Orientation tag (1-8) says how to show it, as a phone's photo does
    (6: turn a quarter clockwise)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    # APP1 "Exif": a big-endian TIFF header and one IFD entry, Orientation (0x0112), a SHORT.
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    payload = b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    dst.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:])
    return dst


def first_frames(src: Path, n: int) -> list[np.ndarray]:
    out = []
    with av.open(str(src)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="bgr24"))
            if len(out) == n:
                break
    return out


def write_still(src: Path, dst: Path, frame: int = 0) -> Path:
    """Frame `frame` of the video `src` as a still image (png, jpg: by `dst`'s suffix): a photo avatar."""
    cv2.imwrite(str(dst), first_frames(src, frame + 1)[frame])
    return dst


def write_wav(dst: Path, samples: np.ndarray, rate: int) -> Path:
    """Float samples in [-1, 1] (clipped), (S,) mono or (C, S), as a PCM16 WAV file."""
    import wave

    channels = np.atleast_2d(samples)
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(channels.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(channels.T, -1, 1) * 32767).astype("<i2").tobytes())  # interleaved
    return dst


def silent_wav(dst: Path, seconds: float, rate: int = 16_000) -> Path:
    return write_wav(dst, np.zeros(int(seconds * rate), np.float32), rate)


def speech_turn_wav(src: Path, dst: Path, *, lead_s: float, speech_s: float, tail_s: float,
                    rate: int = 48_000) -> Path:
    """`lead_s` of digital silence, the first `speech_s` of `src`, `tail_s` of silence, as PCM16 mono:
    a fake microphone (Chromium loops its file) whose utterances start at a known offset of each loop
    and end in a pause a voice gate closes on."""
    from musetalk_server.media.audio import decode_audio

    speech = decode_audio(src, rate=rate)[: int(speech_s * rate)]
    turn = np.concatenate([np.zeros(int(lead_s * rate), np.float32), speech, np.zeros(int(tail_s * rate), np.float32)])
    return write_wav(dst, turn, rate)


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


def parse_mjpeg(data: bytes, boundary: str = "frame") -> tuple[list[Part], bool]:
    """Split a multipart/x-mixed-replace body by Content-Length. Returns (parts, closed)."""
    parts, pos, delim = [], 0, f"--{boundary}".encode()
    while True:
        assert data.startswith(delim, pos), f"expected a boundary at byte {pos}"
        pos += len(delim)
        if data.startswith(b"--", pos):
            return parts, True
        assert data.startswith(b"\r\n", pos)
        end = data.index(b"\r\n\r\n", pos)
        headers = dict(line.split(": ", 1) for line in data[pos + 2:end].decode().split("\r\n"))
        size = int(headers["Content-Length"])
        body = data[end + 4:end + 4 + size]
        assert len(body) == size, "part shorter than its Content-Length"
        parts.append(Part(headers, body))
        pos = end + 4 + size
        assert data.startswith(b"\r\n", pos)
        pos += 2
        if pos >= len(data):
            return parts, False


@dataclass
class Mp4Facts:
    video_codec: str
    pix_fmt: str
    frames: int
    fps: float
    width: int
    height: int
    audio_codec: str
    audio_seconds: float
    audio_channels: int


def read_mp4(path: Path) -> Mp4Facts:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        video = (v.codec_context.name, v.codec_context.pix_fmt, float(v.average_rate), v.width, v.height)
        audio_codec, channels = a.codec_context.name, a.channels
        frames = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    codec, pix_fmt, fps, width, height = video
    return Mp4Facts(codec, pix_fmt, frames, fps, width, height, audio_codec, samples / rate, channels)


def write_offset_av(dst: Path, *, video_start: float, audio_start: float, burst_at: float,
                    seconds: float = 2.0, fps: int = 25, rate: int = 16_000) -> Path:
    """A small video whose streams start at different instants (as camera and phone files do):
    frames from `video_start`, audio from `audio_start`, both on the container's clock, and one
    50 ms 1 kHz burst at `burst_at` on that clock, so a test can see where the audio lands."""
    with av.open(str(dst), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        t = audio_start + np.arange(int((seconds + 1.0) * rate)) / rate
        burst = (t >= burst_at) & (t < burst_at + 0.05)
        samples = np.where(burst, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
        for k in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, k:k + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), round(audio_start * rate) + k
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        for i in range(int(seconds * fps)):
            image = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="bgr24")
            image.time_base, image.pts = Fraction(1, fps), round(video_start * fps) + i
            out.mux(video.encode(image))
        out.mux(video.encode(None))
    return dst
