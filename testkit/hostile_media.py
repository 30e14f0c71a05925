"""A corpus of hostile media, generated into a temporary folder (nothing big is committed).

Each case names the file, the endpoint kind it goes to (`audio` for the inference endpoints,
`video` for preprocess) and the answer the service must give. The files are made from the
shared clips by truncating, flipping and rewriting headers, or written from scratch, so a
header can claim what the bytes do not hold (8K x 8K frames, 10^6 frames, 6 hours).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from testkit.media import media
from testkit.mediatools import first_frames, transcode_audio, write_video

_WAV_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
_WAV_PCM = 1
SIX_HOURS_S = 6 * 3600
HUGE_SIDE = 8192
MILLION = 10**6


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "audio" (stream and batch) or "video" (preprocess)
    path: Path
    status: int
    code: str


def wav_bytes(data: bytes, *, rate: int, channels: int = 1, bits: int = 16, fmt: int = _WAV_PCM,
              declared: int | None = None) -> bytes:
    """A RIFF/WAVE file around `data`; `declared` overrides the data chunk's size (a lying header)."""
    size = len(data) if declared is None else declared
    block = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", min(36 + size, 0xFFFFFFFF)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits)
    return header + b"data" + struct.pack("<I", min(size, 0xFFFFFFFF)) + data


def float_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    path.write_bytes(wav_bytes(samples.astype("<f4").tobytes(), rate=rate, bits=32, fmt=_WAV_FLOAT))
    return path


def long_wav(path: Path, seconds: float, *, rate: int, bits: int = 16, sized: bool = True) -> Path:
    """A WAV of `seconds` of silence, written as a sparse file (no disk used, however long).

    With `sized` False the sizes say 'unknown' (0xFFFFFFFF), as a live recorder writes them:
    only decoding can tell how long it is.
    """
    total = int(seconds * rate) * bits // 8
    path.write_bytes(wav_bytes(b"", rate=rate, bits=bits, declared=total if sized else 0xFFFFFFFF))
    with path.open("r+b") as f:
        f.truncate(44 + total)
    return path


def truncated(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def bit_flipped(src: Path, dst: Path, *, start: int, count: int) -> Path:
    """Every bit of `count` bytes from `start` inverted: the container's own header, broken."""
    data = bytearray(src.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def y4m(path: Path, *, width: int, height: int, frames: int, rate: str = "25:1") -> Path:
    """Raw 4:2:0 video with a one-line header; `frames` small gray frames of `width` x `height`
    (with 0 frames the header alone claims the size)."""
    frame = b"FRAME\n" + bytes([128]) * (width * height * 3 // 2)
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F{rate} Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 16x16 PNG whose IHDR (with a correct CRC) claims `width` x `height`."""
    ok, buf = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    ihdr = 8 + 4  # signature, then the chunk length; the type and fields follow
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def faceless_video(path: Path, frames: int = 25) -> Path:
    """Moving gray noise: decodable, with no face in it."""
    rng = np.random.default_rng(0)
    clip = [cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), np.uint8), (0, 0), 6) for _ in range(frames)]
    return write_video(clip, path, "libx264", 25.0, fmt="mp4")


def two_face_video(path: Path, frames: int = 25, *, mirror: bool = False) -> Path:
    """vr_face2 (large, left) beside lp_d11 at half size (small, right), side by side;
    `mirror` flips the picture, so the large face is on the right."""
    big = first_frames(media("vr_face2.mp4"), frames)
    small = first_frames(media("lp_d11.mp4"), frames)
    h = big[0].shape[0]
    out = []
    for a, b in zip(big, small, strict=False):
        b = cv2.resize(b, (b.shape[1] // 2, b.shape[0] // 2))
        canvas = np.zeros((h, b.shape[1], 3), np.uint8)
        top = (h - b.shape[0]) // 2
        canvas[top : top + b.shape[0]] = b
        both = np.hstack([a, canvas])[:, : (a.shape[1] + b.shape[1]) // 2 * 2]
        out.append(np.ascontiguousarray(both[:, ::-1] if mirror else both))
    return write_video(out, path, "libx264", 25.0, fmt="mp4")


def audio_cases(tmp: Path) -> list[Case]:
    """Hostile audio for /inference/stream and /inference/batch."""
    speech = media("mt_eng.wav")
    mp3 = transcode_audio(speech, tmp / "speech.mp3", "libmp3lame", rate=16_000, seconds=3)
    ogg = transcode_audio(speech, tmp / "speech.ogg", "libopus", rate=48_000, seconds=3, fmt="ogg")
    m4a = transcode_audio(speech, tmp / "speech.mp4", "aac", rate=16_000, seconds=3, fmt="mp4")
    nan_mid = np.zeros(16_000, np.float32)
    nan_mid[12_345] = np.nan
    cases = [
        Case("nan_f32.wav", "audio", float_wav(tmp / "nan_f32.wav", np.full(16_000, np.nan)), 422, "unsupported_media"),
        Case("inf_f32.wav", "audio", float_wav(tmp / "inf_f32.wav", np.full(16_000, np.inf)), 422, "unsupported_media"),
        Case("neg_inf_f32.wav", "audio", float_wav(tmp / "neg_inf_f32.wav", np.full(16_000, -np.inf)), 422,
             "unsupported_media"),
        Case("one_nan_f32.wav", "audio", float_wav(tmp / "one_nan_f32.wav", nan_mid), 422, "unsupported_media"),
        # 8-bit at 1 kHz keeps the uploads small (21.6 MB for six hours, 0.7 MB for 700 s).
        Case("six_hours.wav", "audio", long_wav(tmp / "six_hours.wav", SIX_HOURS_S, rate=1_000, bits=8), 413,
             "too_large"),
        Case("unsized_700s.wav", "audio", long_wav(tmp / "unsized_700s.wav", 700, rate=1_000, bits=8, sized=False),
             413, "too_large"),
        Case("zero_samples.wav", "audio", _write(tmp / "zero_samples.wav", wav_bytes(b"", rate=16_000)), 422,
             "unsupported_media"),
        Case("zero_bytes.wav", "audio", _write(tmp / "zero_bytes.wav", b""), 415, "unsupported_media"),
        Case("header_only.wav", "audio", truncated(speech, tmp / "header_only.wav", 40), 415, "unsupported_media"),
        Case("flipped_header.wav", "audio", bit_flipped(speech, tmp / "flipped_header.wav", start=0, count=16), 415,
             "unsupported_media"),
        Case("truncated.mp3", "audio", truncated(mp3, tmp / "truncated.mp3", 20), 415, "unsupported_media"),
        Case("flipped.mp3", "audio", _flip_every(mp3, tmp / "flipped.mp3"), 415, "unsupported_media"),
        Case("truncated.ogg", "audio", truncated(ogg, tmp / "truncated.ogg", 100), 415, "unsupported_media"),
        Case("flipped_header.ogg", "audio", bit_flipped(ogg, tmp / "flipped_header.ogg", start=0, count=64), 415,
             "unsupported_media"),
        Case("truncated.mp4", "audio", truncated(m4a, tmp / "truncated.mp4", 200), 415, "unsupported_media"),
        Case("flipped_header.mp4", "audio", bit_flipped(m4a, tmp / "flipped_header.mp4", start=0, count=64), 415,
             "unsupported_media"),
        Case("image_only.png", "audio", png_claiming(tmp / "image_only.png", 16, 16), 415, "unsupported_media"),
        Case("video_only.mp4", "audio", faceless_video(tmp / "video_only.mp4", frames=5), 415, "unsupported_media"),
        Case("text.wav", "audio", _write(tmp / "text.wav", b"RIFF? no, just text\n" * 50), 415, "unsupported_media"),
    ]
    return cases


def video_cases(tmp: Path) -> list[Case]:
    """Hostile videos for /avatars/preprocess."""
    clip = media("vr_face2.mp4")
    return [
        Case("truncated.mp4", "video", truncated(clip, tmp / "truncated.mp4", 4096), 415, "unsupported_media"),
        Case("flipped_header.mp4", "video", bit_flipped(clip, tmp / "flipped_header.mp4", start=0, count=64), 415,
             "unsupported_media"),
        Case("zero_bytes.mp4", "video", _write(tmp / "zero_bytes.mp4", b""), 415, "unsupported_media"),
        Case("zero_frames.y4m", "video", y4m(tmp / "zero_frames.y4m", width=64, height=64, frames=0), 415,
             "unsupported_media"),
        Case("8k_by_8k.y4m", "video", y4m(tmp / "8k_by_8k.y4m", width=HUGE_SIDE, height=HUGE_SIDE, frames=0), 413,
             "too_large"),
        Case("8k_by_8k.png", "video", png_claiming(tmp / "8k_by_8k.png", HUGE_SIDE, HUGE_SIDE), 413, "too_large"),
        Case("million_frames.y4m", "video",
             y4m(tmp / "million_frames.y4m", width=2, height=2, frames=MILLION, rate=f"{MILLION}:1"), 413, "too_large"),
        Case("audio_only.wav", "video", media("mt_eng.wav"), 415, "unsupported_media"),
        Case("no_face.mp4", "video", faceless_video(tmp / "no_face.mp4"), 422, "no_face_detected"),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _flip_every(src: Path, dst: Path) -> Path:
    """Every byte inverted: no frame sync survives."""
    dst.write_bytes(bytes(b ^ 0xFF for b in src.read_bytes()))
    return dst
