"""Lip sync on your own talking clips, measured from outside, through the HTTP API.

`bench/lipsync_eval.py` drives the engine in-process. This runs the way a user (or an outside
evaluator) would, so everything between the upload and the MP4 is inside the measurement: the
upload's decoding and re-timing to the server's frame rate, the soundtrack read from the
container, the render and the H.264 encode.

For each clip (a video of a person speaking, with their own speech as its soundtrack):
1. cut it at half its frames, at its own frame rate: the first half, frames and soundtrack, is
   written as an MP4 and preprocessed as the avatar (also without its soundtrack, with
   `--no-soundtrack` only that way);
2. the second half's audio, as a WAV, drives `POST /inference/batch/{avatar_id}`;
3. dlib's 68 points (the `eval` extra) read the inner-lip aperture on the returned MP4's frames
   and on the filmed second half re-timed to the MP4's frame rate exactly as the server re-times
   an upload (media/video.py, nearest previous frame);
4. r_gt: rendered against filmed aperture at lag 0; r_env: rendered against the speech envelope
   at the best lag in ±3 frames; env→gt: the envelope itself against the filmed mouth; shut in
   silence: the share of silent frames whose rendered lips read shut.

`--reverse` swaps the halves. The clips default to the ground-truth clips of `../shared/media`
(see its README); any folder of your own works:

    python -m bench.lipsync_http [CLIP.mp4 ...] [--url http://host:port --api-key KEY] [--reverse]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np

from bench import lipsync_eval as ev
from bench.service_bench import start_server
from musetalk_server.media.audio import decode_audio, soundtrack
from musetalk_server.media.frame_timing import SAMPLE_RATE
from musetalk_server.media.mp4 import Mp4Writer
from musetalk_server.media.video import read_video
from testkit.mediatools import write_video, write_wav

TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Halves:
    avatar: Path  # MP4: the avatar half's frames at the clip's own rate, with its soundtrack
    silent_avatar: Path  # the same frames without sound
    drive: Path  # WAV: the other half's audio
    drive_audio: np.ndarray  # ... its samples, read back from the WAV
    filmed: Path  # MP4: the other half's frames, to be read back at the render's rate


@dataclass
class Row:
    clip: str
    split: str
    soundtrack: bool
    frames: int
    fps: float
    r_gt: float
    r_env: float
    lag: int
    env_gt: float
    shut_in_silence: float | None
    silent_frames: int


def cut(clip: Path, folder: Path, reverse: bool) -> Halves:
    """The clip's halves as files, at its own frame rate, on one clock (frame 0's instant)."""
    native = frame_rate(clip)
    video = read_video(clip, native)
    audio = soundtrack(clip, len(video.frames) / native, start_s=video.start_s)
    if audio is None:
        raise SystemExit(f"{clip.name}: no soundtrack; a ground-truth clip needs the speaker's own speech")
    half = len(video.frames) // 2
    at = round(half / native * SAMPLE_RATE)
    parts = [(video.frames[:half], audio[:at]), (video.frames[half:], audio[at:])]
    (own_frames, own_audio), (other_frames, other_audio) = parts[::-1] if reverse else parts
    stem = folder / clip.stem
    drive = write_wav(Path(f"{stem}-drive.wav"), other_audio, SAMPLE_RATE)
    return Halves(avatar=_with_sound(own_frames, own_audio, native, Path(f"{stem}-avatar.mp4")),
                  silent_avatar=write_video(own_frames, Path(f"{stem}-avatar-silent.mp4"), "libx264", native),
                  drive=drive, drive_audio=decode_audio(drive, rate=SAMPLE_RATE),  # as the server hears it
                  filmed=write_video(other_frames, Path(f"{stem}-filmed.mp4"), "libx264", native))


def frame_rate(clip: Path) -> float:
    """The video stream's own frame rate, from its header (25 where it declares none)."""
    with av.open(str(clip)) as c:
        rate = c.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def _with_sound(frames: list[np.ndarray], audio: np.ndarray, fps: float, path: Path) -> Path:
    """An MP4 as a camera or an editor writes one: H.264 with its AAC soundtrack (the service's writer)."""
    h, w = frames[0].shape[:2]
    writer = Mp4Writer(path, fps=fps, width=w, height=h, audio=audio, audio_rate=SAMPLE_RATE)
    for f in frames:
        writer.write(f)
    writer.close()
    return path


def _ok(r: httpx.Response) -> httpx.Response:
    """`r`, or the run stops with what the server answered (its error code says why)."""
    if r.is_error:
        raise SystemExit(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r


def render(client: httpx.Client, avatar_id: str, avatar: Path, drive: Path, folder: Path) -> tuple[Path, float]:
    """The MP4 the avatar made of `avatar` renders for `drive`, and its frame rate (the avatar's `info.fps`)."""
    r = client.post("/avatars/preprocess", data={"avatar_id": avatar_id, "overwrite": "true"},
                    files={"video_file": (avatar.name, avatar.read_bytes(), "video/mp4")})
    fps = float(_ok(r).json()["info"]["fps"])
    r = client.post(f"/inference/batch/{avatar_id}", files={"audio_file": (drive.name, drive.read_bytes(), "audio/wav")})
    _ok(r)
    out = folder / f"{avatar_id}-render.mp4"
    out.write_bytes(r.content)
    return out, fps


def score(clip: str, split: str, with_sound: bool, rendered: Path, fps: float, filmed: np.ndarray,
          drive_audio: np.ndarray, reader: ev.Measure) -> Row:
    """`filmed`: the filmed half's apertures at `fps`."""
    shown = read_video(rendered, fps).frames
    n = min(len(shown), len(filmed))
    mouth, truth = reader.read(shown[:n]), filmed[:n]
    env = ev.envelope(drive_audio, n, fps)
    r_env, lag = ev.lagged_r(mouth, env)
    silent = ev.silent_mask(env)
    shut = float((mouth[silent] < reader.closed).mean()) if silent.any() else None
    return Row(clip, split, with_sound, n, round(fps, 3), round(ev.pearson(mouth, truth), 3), round(r_env, 3), lag,
               round(ev.pearson(env, truth), 3), None if shut is None else round(shut, 3), int(silent.sum()))


def table(rows: list[Row]) -> str:
    lines = ["| clip | split | avatar soundtrack | frames (fps) | r_gt | r_env (lag) | env→gt | shut in silence |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shut = "–" if r.shut_in_silence is None else f"{r.shut_in_silence} ({r.silent_frames})"
        lines.append(f"| {r.clip} | {r.split} | {'with' if r.soundtrack else 'without'} | {r.frames} ({r.fps:g}) | "
                     f"{r.r_gt} | {r.r_env} ({r.lag:+d}) | {r.env_gt} | {shut} |")
    for with_sound in (True, False):
        some = [r for r in rows if r.soundtrack == with_sound]
        if some:
            med = {k: round(float(np.median([getattr(r, k) for r in some])), 3) for k in ("r_gt", "r_env", "env_gt")}
            lines.append(f"| **median** | | {'with' if with_sound else 'without'} | | {med['r_gt']} | {med['r_env']} | "
                         f"{med['env_gt']} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, default=[ev.MEDIA / f"{c}.mp4" for c in ev.GROUND_TRUTH])
    ap.add_argument("--url", help="a running server (default: start one with the lite engine)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--reverse", action="store_true", help="avatar from the second half, driven by the first")
    ap.add_argument("--no-soundtrack", action="store_true", help="only the avatar without its soundtrack")
    args = ap.parse_args(argv)
    reader = ev.measure_by("dlib")
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, url = (None, args.url) if args.url else start_server(folder / "results", "lite")
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
                for clip in args.clips:
                    halves = cut(clip, folder, args.reverse)
                    split = "2nd half drives 1st" if args.reverse else "1st half drives 2nd"
                    filmed: dict[float, np.ndarray] = {}  # apertures of the filmed half, by the render's rate
                    name = re.sub(r"[^A-Za-z0-9_-]", "_", clip.stem)[:58]  # an avatar_id the API accepts
                    for with_sound in ([False] if args.no_soundtrack else [True, False]):
                        avatar_id = f"{name}-{'s' if with_sound else 'n'}{'-r' if args.reverse else ''}"
                        avatar = halves.avatar if with_sound else halves.silent_avatar
                        rendered, fps = render(client, avatar_id, avatar, halves.drive, folder)
                        if fps not in filmed:  # re-timed as the server re-timed the avatar
                            filmed[fps] = reader.read(read_video(halves.filmed, fps).frames)
                        rows.append(score(clip.stem, split, with_sound, rendered, fps, filmed[fps], halves.drive_audio,
                                          reader))
                        print(table(rows[-1:]).splitlines()[2], flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
