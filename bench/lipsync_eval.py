"""Lip-sync quality on ground-truth clips, for any engine (issue 5).

For a clip that carries the speaker's own speech:
1. build an avatar from the first half of the video;
2. drive it with the audio of the second half;
3. measure on the rendered frames with FaceMesh:
   - aperture: inner-lip gap / inter-ocular distance, per frame;
   - r_env: Pearson r of aperture against the speech envelope (log RMS of 300-3000 Hz per frame,
     lightly smoothed) at the best lag in [-3, +3]; lag k pairs aperture[t + k] with envelope[t],
     so a positive lag means the mouth follows the sound;
   - r_gt: r against the filmed aperture of the second half (same frames, no lag); `env_gt` is
     what the envelope itself gives against the filmed mouth (lag 0, and best lag in brackets);
   - closed_in_silence: share of silent frames (envelope below the speech threshold) whose
     rendered mouth is closed;
   - psnr_outside: PSNR of rendered frames against their background frames outside the lower
     face (the region a lip-sync engine may repaint: the jaw line up to the nose, grown a little);
   - jitter: mean frame-to-frame aperture change over consecutive silent frames.
4. write a PNG strip: mouth crops with the envelope and the rendered aperture drawn under them.

Leave-one-clip-out, and more: nothing is fitted on the half a clip is scored on. The avatar is
the first half, frames and soundtrack, so what an engine reads from the soundtrack at preprocess
(lite's spread choice) comes from the first half only. `r_gt generic` is the same run with the
avatar's soundtrack withheld, which has no per-clip choice at all.

Cross-driven runs pair clip A's avatar with other audio (clip B's second half, mt_eng.wav);
they have no r_gt.

    python -m bench.lipsync_eval [--engine lite] [--out results/lipsync] [--clips ...] [--no-cross] [--no-generic]
        [--write-docs]  (also write the table into docs/lite-engine.md, between its generated markers)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from scipy.signal import butter, sosfiltfilt

ROOT = Path(__file__).resolve().parents[1]

from bench.doc_blocks import LITE_ENGINE, check_block, measured_on, write_block  # noqa: E402
from musetalk_server.avatars.preprocess import fill_missing  # noqa: E402
from musetalk_server.engines.base import AvatarFrames, Engine, LoadedAvatar  # noqa: E402
from musetalk_server.engines.lite.own_voice import NOT_THEIR_VOICE, paired  # noqa: E402
from musetalk_server.engines.lite.shape import SHIPPED, GenericMapping  # noqa: E402
from musetalk_server.face.landmarks import JAW, detect_video, inner_lip_gap, interocular  # noqa: E402
from musetalk_server.media.audio import decode_audio, soundtrack  # noqa: E402
from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count, pingpong_index  # noqa: E402
from musetalk_server.media.video import read_video  # noqa: E402

log = logging.getLogger("lipsync_eval")

MEDIA = ROOT.parent / "shared" / "media"
# lp_s18 also carries its speaker's audio, but FaceMesh reads her lips shut on every frame
# (aperture 0.000 throughout), so it has no filmed mouth movement to compare with.
GROUND_TRUTH = ("vr_face1", "vr_face2", "lp_d11", "lp_d12")
FPS = 25.0
MAX_LAG = 3
ENV_BAND_HZ = (300.0, 3000.0)
ENV_SMOOTH = np.array([0.25, 0.5, 0.25])  # light smoothing of the per-frame envelope
SILENCE_BELOW_PEAK_DB = 25.0  # silent: envelope this far under its 95th percentile
CLOSED_APERTURE = 0.03  # inter-ocular units; FaceMesh reads shut lips at 0.00-0.02
REGION_GROW = 0.25  # inter-ocular units the lower-face region grows by, for psnr_outside
LOWER_JAW = JAW[3:-3]  # jaw line between the ears' lobes
NOSE_BASE = (98, 97, 2, 326, 327, 203, 423)
PSNR_CAP = 99.0  # identical pixels have infinite PSNR; report this instead
STRIP_FRAMES = 16

# Issue 13's bars. Per clip: r_env, lag, closed_in_silence, psnr_outside, and r_gt no more than
# r_gt_margin under the clip's own env->gt; over the clips: the median r_gt; speed: render ms,
# barred at 512² (SPEED_BAR_PIXELS) and below: larger frames are reported, their face boxes larger.
SPEED_BAR_PIXELS = 512 * 512
BARS = {"r_env": 0.6, "lag": (-1, 2), "median_r_gt": 0.45, "r_gt_margin": 0.1, "closed_in_silence": 0.95,
        "psnr_outside": 35.0, "render_ms_per_frame": 4.0}


@dataclass
class ClipResult:
    clip: str
    audio: str
    frames: int
    r_env: float
    lag: int
    r_gt: float | None
    env_gt: float | None  # the envelope's own r against the filmed mouth, lag 0
    env_gt_best: float | None  # ... at its best lag
    closed_in_silence: float | None
    silent_frames: int
    psnr_outside: float
    jitter: float | None
    render_ms_per_frame: float
    first_frame_ms: float
    strip: str
    frame_pixels: int = SPEED_BAR_PIXELS
    r_gt_generic: float | None = None  # r_gt with the avatar's soundtrack withheld
    mapping: str = "shipped"  # the generic mapping's settings this run used (leave-one-clip-out choice)
    spread: str = "–"  # how the avatar spreads voiced openness (engine_info.openness_spread), if it says


def envelope(audio: np.ndarray, n_frames: int, fps: float = FPS) -> np.ndarray:
    """(n_frames,) log RMS (dB) of the 300-3000 Hz band per frame, lightly smoothed."""
    sos = butter(4, ENV_BAND_HZ, btype="band", fs=SAMPLE_RATE, output="sos")
    x = sosfiltfilt(sos, audio.astype(np.float64)) if len(audio) > 30 else np.zeros(len(audio))
    hop = SAMPLE_RATE / fps
    rms = np.array([np.sqrt(np.mean(x[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n_frames)])
    db = 20 * np.log10(rms + 1e-6)
    return np.convolve(np.pad(db, 1, mode="edge"), ENV_SMOOTH, "valid")


def silent_mask(env_db: np.ndarray) -> np.ndarray:
    return env_db < np.percentile(env_db, 95) - SILENCE_BELOW_PEAK_DB


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def lagged_r(aperture: np.ndarray, env: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """Best r over lags; lag k pairs aperture[t + k] with env[t] (positive: mouth follows sound)."""
    best = (-2.0, 0)
    for k in range(-max_lag, max_lag + 1):
        e, a = paired(env, aperture, k)
        r = pearson(a, e)
        if r > best[0]:
            best = (r, k)
    return best


def lower_face_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): hull of the jaw line and nose base, grown by REGION_GROW inter-ocular units."""
    poly = np.vstack([points[list(LOWER_JAW)], points[list(NOSE_BASE)]])
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(poly.astype(np.int32)), 1)
    grow = max(int(REGION_GROW * float(interocular(points))), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    return cv2.dilate(mask, kernel).astype(bool)


def aperture_of(points: np.ndarray) -> np.ndarray:
    return inner_lip_gap(points) / interocular(points)


def facemesh_apertures(frames: list[np.ndarray]) -> np.ndarray:
    """(N,) inner-lip aperture per frame, read with FaceMesh (the landmarks the engine itself uses)."""
    return np.nan_to_num(aperture_of(detect_video(frames)[0]), nan=0.0)


Frames = TypeVar("Frames", list[np.ndarray], np.ndarray)


@dataclass(frozen=True)
class Measure:
    """Who reads the mouths: per-frame apertures, and the aperture under which lips count as shut."""

    read: Callable[[list[np.ndarray]], np.ndarray]
    closed: float


FACEMESH = Measure(facemesh_apertures, CLOSED_APERTURE)


def measure_by(detector: str) -> Measure:
    """The mouth reader by name: "facemesh" (the engine's own landmarks) or "dlib" (68 points,
    trained apart from FaceMesh; the `eval` extra, imported only when asked for)."""
    if detector == "facemesh":
        return FACEMESH
    from bench.dlib_mouth import CLOSED_APERTURE as DLIB_CLOSED
    from bench.dlib_mouth import DlibMouth
    return Measure(DlibMouth().apertures, DLIB_CLOSED)


def avatar_landmarks(frames: list[np.ndarray]) -> np.ndarray:
    """FaceMesh landmarks with faceless frames filled from the nearest face, as preprocess does."""
    points, found = detect_video(frames)
    return points[fill_missing(points, found)[0]]


def build_avatar(engine: Engine, frames: list[np.ndarray], work: Path, avatar_id: str,
                 audio: np.ndarray | None = None, points: np.ndarray | None = None) -> LoadedAvatar:
    """Prepare `frames` (with their own soundtrack `audio`, if any) as an avatar with `engine`, in `work`.
    `points`: their avatar_landmarks, where the caller has them already (a split of a clip read once)."""
    if points is None:
        points = avatar_landmarks(frames)
    path = work / avatar_id
    info = engine.prepare(AvatarFrames(frames, points, FPS, audio), 0, path / "engine")
    manifest = {"fps": FPS, "frames": len(frames), "engine": engine.name, "engine_info": info}
    return LoadedAvatar(avatar_id, path, manifest, list(frames), points, path / "engine")


def render_all(engine: Engine, avatar: LoadedAvatar, audio: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    """All frames, plus (first-frame ms, mean ms per frame) of the engine's render alone."""
    renderer = engine.open(avatar)
    t0 = time.perf_counter()
    out, first = [], 0.0
    for frame in renderer.render(audio, FPS):
        if not out:
            first = (time.perf_counter() - t0) * 1000
        out.append(frame.copy())
    total = (time.perf_counter() - t0) * 1000
    return out, first, total / max(len(out), 1)


def busiest_window(env_db: np.ndarray, count: int) -> int:
    """Start of the `count` frames whose envelope varies most: speech with a pause in it, so the
    strip shows the mouth opening and shutting (the loudest stretch would show only open mouths)."""
    if len(env_db) <= count:
        return 0
    c1, c2 = np.cumsum(np.r_[0.0, env_db]), np.cumsum(np.r_[0.0, env_db**2])
    mean = (c1[count:] - c1[:-count]) / count
    var = (c2[count:] - c2[:-count]) / count - mean**2
    return int(np.argmax(var))


def draw_strip(frames: list[np.ndarray], points: np.ndarray, env_db: np.ndarray, aperture: np.ndarray,
               path: Path, count: int = 12, start: int = 0) -> None:
    """Mouth crops of `count` consecutive frames, with envelope (green) and aperture (red) below."""
    n = min(count, len(frames) - start)
    if n <= 0:
        return
    tile = 160
    crops = []
    for i in range(start, start + n):
        p = points[i]
        c = p[[61, 291, 13, 14]].mean(0)
        half = 0.55 * float(interocular(p))
        x0, y0 = int(c[0] - half), int(c[1] - half * 0.8)
        x1, y1 = int(c[0] + half), int(c[1] + half * 1.2)
        h, w = frames[i].shape[:2]
        crop = frames[i][max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
        crops.append(cv2.resize(crop, (tile, tile)))
    top = np.hstack(crops)
    plot = np.full((100, top.shape[1], 3), 255, np.uint8)
    xs = (np.arange(start, start + n) - start + 0.5) * tile
    e = env_db[start:start + n]
    e_n = (e - env_db.min()) / max(env_db.max() - env_db.min(), 1e-6)
    a_n = np.clip(aperture[start:start + n] / max(float(np.nanmax(aperture)), 1e-6), 0, 1)
    for series, colour in ((e_n, (0, 160, 0)), (a_n, (0, 0, 220))):
        pts = np.stack([xs, 95 - 90 * series], 1).astype(np.int32)
        cv2.polylines(plot, [pts], False, colour, 2, cv2.LINE_AA)
    cv2.putText(plot, "green: speech envelope  red: rendered aperture", (5, 14), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([top, plot]))


def score(engine: Engine, clip: str, avatar_frames: list[np.ndarray], audio: np.ndarray,
          audio_name: str, filmed: np.ndarray | None, out_dir: Path, work: Path,
          avatar_audio: np.ndarray | None = None, measure: Measure = FACEMESH) -> ClipResult:
    """Render `audio` on an avatar made of `avatar_frames` (soundtrack `avatar_audio`) and measure it."""
    suffix = "" if avatar_audio is not None else "-generic"
    avatar = build_avatar(engine, avatar_frames, work, f"{clip}-{audio_name}{suffix}", avatar_audio)
    rendered, first_ms, per_frame_ms = render_all(engine, avatar, audio)
    n = len(rendered)
    points, _found = detect_video(rendered)
    aperture = np.nan_to_num(aperture_of(points), nan=0.0) if measure is FACEMESH else measure.read(rendered)
    env_db = envelope(audio, n)
    r_env, lag = lagged_r(aperture, env_db)
    silent = silent_mask(env_db)
    closed = aperture < measure.closed
    both = silent[1:] & silent[:-1]
    jitter = float(np.mean(np.abs(np.diff(aperture))[both])) if both.any() else None
    # PSNR outside the lower face, pooled over all frames.
    sq_err, count = 0.0, 0
    for i, frame in enumerate(rendered):
        b = pingpong_index(i, len(avatar.frames))
        keep = ~lower_face_mask(avatar.landmarks[b], frame.shape[:2])
        diff = frame[keep].astype(np.float64) - avatar.frames[b][keep].astype(np.float64)
        sq_err += float(np.sum(diff**2))
        count += diff.size
    mse = sq_err / max(count, 1)
    psnr = PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * np.log10(255.0**2 / mse))
    r_gt = env_gt = env_gt_best = None
    if filmed is not None:
        m = min(n, len(filmed))
        r_gt = pearson(aperture[:m], filmed[:m])
        env_gt = pearson(env_db[:m], filmed[:m])
        env_gt_best = lagged_r(filmed[:m], env_db[:m])[0]
    strip = out_dir / f"strip_{clip}_{audio_name}{suffix.replace('-', '_')}.png"
    draw_strip(rendered, np.nan_to_num(points), env_db, aperture, strip, start=busiest_window(env_db, STRIP_FRAMES),
               count=STRIP_FRAMES)
    return ClipResult(
        clip=clip, audio=audio_name, frames=n, r_env=round(r_env, 3), lag=lag,
        r_gt=None if r_gt is None else round(r_gt, 3),
        env_gt=None if env_gt is None else round(env_gt, 3),
        env_gt_best=None if env_gt_best is None else round(env_gt_best, 3),
        closed_in_silence=round(float(closed[silent].mean()), 3) if silent.any() else None,
        silent_frames=int(silent.sum()), psnr_outside=round(float(psnr), 2),
        jitter=None if jitter is None else round(jitter, 4),
        render_ms_per_frame=round(per_frame_ms, 2), first_frame_ms=round(first_ms, 1), strip=str(strip),
        frame_pixels=int(rendered[0].shape[0] * rendered[0].shape[1]) if rendered else 0,
        spread=spread_summary(avatar.manifest["engine_info"]),
    )


def spread_summary(info: dict) -> str:
    """'rank (0.26→0.43, A/V offset -4)': the spread the avatar chose, with its own frames' r by
    share → by rank at the file's own A/V offset."""
    facts = info.get("openness_spread") if isinstance(info, dict) else None
    if not facts:
        return "–"
    if "r_share" not in facts:
        return str(facts.get("spread", "?"))
    why = ", not their voice" if facts.get("reason") == NOT_THEIR_VOICE else ""
    offset = f", A/V offset {facts['av_offset_frames']:+d}" if facts.get("av_offset_frames") else ""
    return f"{facts['spread']}{why} ({facts['r_share']}→{facts['r_rank']}{offset})"


# A clip to score: a shared ground-truth clip's name (MEDIA/<name>.mp4), or the path of any
# talking clip whose soundtrack is the speaker's own voice (a face the engine was never tuned on).
Clip = str | Path


def clip_path(clip: Clip) -> Path:
    return clip if isinstance(clip, Path) else MEDIA / f"{clip}.mp4"


def load_clip(clip: Clip) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames at FPS and the soundtrack from frame 0's instant, decoded as the service's
    preprocess decodes an upload (so a clip whose streams start apart is scored in sync)."""
    path = clip_path(clip)
    video = read_video(path, FPS)
    audio = soundtrack(path, len(video.frames) / FPS, start_s=video.start_s)
    return list(video.frames), audio if audio is not None else np.zeros(0, np.float32)


def halves(frames: Frames, audio: np.ndarray) -> tuple[Frames, Frames, np.ndarray, np.ndarray]:
    """(first-half frames, second-half frames, second-half audio, first-half audio), on the frame grid.
    `frames` may be anything per frame that slices: images, landmarks, apertures.

    The first half, frames and soundtrack, is the avatar video; the second half is never seen at
    preprocess, so nothing learned there comes from the frames it is scored on."""
    half = len(frames) // 2
    first, second = slice(0, half), slice(half, len(frames))
    return frames[first], frames[second], audio_of(audio, second), audio_of(audio, first)


def audio_of(audio: np.ndarray, frames: slice) -> np.ndarray:
    """The samples of `audio` under frames [frames.start, frames.stop) on the FPS grid."""
    return audio[round(frames.start / FPS * SAMPLE_RATE):round(frames.stop / FPS * SAMPLE_RATE)]


def evaluate_clip(engine: Engine, clip: str, out_dir: Path, work: Path, generic: bool = False,
                  measure: Measure = FACEMESH, reverse: bool = False) -> ClipResult:
    """The ground-truth run: first half as avatar, second half's audio as driver (`reverse`: the
    other way round, a split nothing was ever tuned on). With `generic`, also the same run with
    the avatar's soundtrack withheld (fills `r_gt_generic`)."""
    frames, audio = load_clip(clip)
    first, second, drive, own = halves(frames, audio)
    name = f"{clip}_2nd"
    if reverse:
        first, second, drive, own, name = second, first, own, drive, f"{clip}_1st"
    n = frame_count(len(drive), FPS)
    filmed = measure.read(second[:n])
    result = score(engine, clip, first, drive, name, filmed, out_dir, work, own, measure)
    if generic:
        result.r_gt_generic = score(engine, clip, first, drive, name, filmed, out_dir, work, measure=measure).r_gt
    return result


def evaluate_cross(engine: Engine, clip: str, audio: np.ndarray, audio_name: str, out_dir: Path,
                   work: Path, measure: Measure = FACEMESH) -> ClipResult:
    frames, own_audio = load_clip(clip)
    first, _, _, own = halves(frames, own_audio)
    return score(engine, clip, first, audio, audio_name, None, out_dir, work, own, measure)


def median_row(rows: list[ClipResult]) -> dict[str, float | None]:
    def med(key: str) -> float | None:
        vals = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return round(float(np.median(vals)), 3) if vals else None
    keys = ("r_env", "lag", "r_gt", "r_gt_generic", "env_gt", "env_gt_best", "closed_in_silence", "psnr_outside", "jitter",
            "render_ms_per_frame", "first_frame_ms")
    return {k: med(k) for k in keys}


def meets_bar(med: dict[str, float | None], rows: list[ClipResult]) -> dict[str, bool]:
    """Each bar over the ground-truth runs: the median r_gt, and every clip's own bars."""
    missed = {m for r in rows for m in clip_bars(r)}
    out = {"median_r_gt": (med["r_gt"] or 0) >= BARS["median_r_gt"]}
    for key in ("r_env", "lag", "r_gt", "closed_in_silence", "psnr_outside", "render_ms_per_frame"):
        out[key] = key not in missed
    return out


def clip_bars(r: ClipResult) -> list[str]:
    """The bars this one run misses (r_gt only where there is a filmed mouth, the shut bar only
    where there is silence)."""
    lo, hi = BARS["lag"]
    missed = []
    if r.r_env < BARS["r_env"]:
        missed.append("r_env")
    if not lo <= r.lag <= hi:
        missed.append("lag")
    if r.r_gt is not None and r.r_gt < (r.env_gt or 0) - BARS["r_gt_margin"]:
        missed.append("r_gt")
    if r.closed_in_silence is not None and r.closed_in_silence < BARS["closed_in_silence"]:
        missed.append("closed_in_silence")
    if r.psnr_outside < BARS["psnr_outside"]:
        missed.append("psnr_outside")
    if r.frame_pixels <= SPEED_BAR_PIXELS and r.render_ms_per_frame > BARS["render_ms_per_frame"]:
        missed.append("render_ms_per_frame")
    return missed


def markdown(rows: list[ClipResult], med: dict[str, float | None], cross: list[ClipResult]) -> str:
    def fmt(v: object) -> str:
        return "–" if v is None else str(v)
    head = ("| clip | audio | frames | generic settings | spread (own r: share→rank) | "
            "r_env | lag | r_gt | "
            "r_gt generic | env→gt (best lag) | closed_in_silence | psnr_outside dB | jitter | "
            "render ms/frame | first frame ms | bars missed |")
    lines = [head, "|" + "---|" * 16]
    for r in rows + cross:
        lines.append(f"| {r.clip} | {r.audio} | {r.frames} | {r.mapping} | {r.spread} | "
                     f"{r.r_env} | {r.lag:+d} | "
                     f"{fmt(r.r_gt)} | {fmt(r.r_gt_generic)} | {fmt(r.env_gt)} ({fmt(r.env_gt_best)}) | "
                     f"{fmt(r.closed_in_silence)} ({r.silent_frames}) | {r.psnr_outside} | {fmt(r.jitter)} | "
                     f"{r.render_ms_per_frame} | {r.first_frame_ms} | {', '.join(clip_bars(r)) or 'none'} |")
    missed = [k for k, ok in meets_bar(med, rows).items() if not ok]
    lines.insert(2 + len(rows), f"| **median** (ground truth) | | | | | {med['r_env']} | {fmt(med['lag'])} | "
                 f"{fmt(med['r_gt'])} | {fmt(med['r_gt_generic'])} | {fmt(med['env_gt'])} "
                 f"({fmt(med['env_gt_best'])}) | {fmt(med['closed_in_silence'])} | {med['psnr_outside']} | "
                 f"{fmt(med['jitter'])} | {med['render_ms_per_frame']} | {med['first_frame_ms']} | "
                 f"{', '.join(missed) or 'none'} |")
    return "\n".join(lines)


def make_engine(name: str, mapping: GenericMapping = SHIPPED) -> Engine:
    if name == "lite":
        from musetalk_server.engines.lite import LiteEngine
        return LiteEngine(mapping)
    raise SystemExit(f"engine {name!r}: only 'lite' can be built by this script without a model dir")


# Leave-one-clip-out: the generic mapping's data-chosen settings (shape.GenericMapping) are
# chosen again for each clip from this grid, on the other clips alone, and the clip is scored
# with that choice. The grid holds the shipped settings and their neighbours.
MAPPINGS = tuple(GenericMapping(range_db=r, vowel_weight=v, hold=h)
                 for r in (30.0, 40.0) for v in (0.3, 0.6) for h in (0, 1))


@dataclass
class TuningClip:
    landmarks: np.ndarray  # (N, 478, 2), the whole clip
    audio: np.ndarray
    filmed: np.ndarray  # (N,) aperture, by the eval's measure
    # N x (H, W, 3) with keep_frames, for whoever renders its splits; else none (the four clips'
    # frames are most of a gigabyte, and choosing settings needs their landmarks only).
    frames: list[np.ndarray] = field(default_factory=list)


def tuning_clip(clip: Clip, measure: Measure, keep_frames: bool = False) -> TuningClip:
    frames, audio = load_clip(clip)
    points = avatar_landmarks(frames)
    filmed = np.nan_to_num(aperture_of(points), nan=0.0) if measure is FACEMESH else measure.read(frames)
    return TuningClip(points, audio, filmed, frames if keep_frames else [])


TUNING_SHARES = (0.4, 0.5, 0.6)  # the avatar's share of a clip, from either end, in tuning_r's splits


def tuning_splits(n: int) -> list[tuple[slice, slice]]:
    """(avatar frames, driving frames) of a clip of `n` frames: the avatar is the first or the
    last TUNING_SHARES of it, driven by the rest. Six splits, not the two halves: on clips of
    3-5 s one split's r moves by more than the settings do, so fewer splits choose on noise."""
    out = []
    for share in TUNING_SHARES:
        k = round(n * share)
        out += [(slice(0, k), slice(k, n)), (slice(n - k, n), slice(0, n - k))]
    return out


def tuning_r(mapping: GenericMapping, clips: list[TuningClip]) -> float:
    """Mean r of the generic mapping's target aperture against the filmed mouth, over `clips`,
    each split every way tuning_splits gives: an avatar from one part driven by the other part's
    audio. No rendering: the target is what the bank is asked for, which is cheap and what the
    settings change."""
    from musetalk_server.engines.lite.engine import speaking_bank
    from musetalk_server.engines.lite.shape import ShapeStream

    rs = []
    for c in clips:
        for avatar, drive in tuning_splits(len(c.filmed)):
            bank = speaking_bank(c.landmarks[avatar], audio_of(c.audio, avatar), FPS, mapping)[0]
            target = c.filmed[drive]
            shapes = ShapeStream(audio_of(c.audio, drive), FPS, len(target), bank.shape_range(), mapping=mapping)
            rs.append(pearson(np.array([s.aperture for s in shapes]), target))
    return float(np.mean(rs))


def choose_mapping(held_out: str, tuning: dict[str, TuningClip]) -> GenericMapping:
    """The settings the other clips choose, and the learned opening fitted on them alone (the shipped
    one was fitted on every clip, this one's too)."""
    from bench.learned_mapping import fit  # it builds on this module

    others = [t for c, t in tuning.items() if c != held_out]
    learned = fit(others).opening
    return max((replace(m, learned=learned) for m in MAPPINGS), key=lambda m: tuning_r(m, others))


def describe_mapping(m: GenericMapping) -> str:
    shipped = " (shipped)" if replace(m, learned=SHIPPED.learned) == SHIPPED else ""
    learned = "" if m.learned == SHIPPED.learned else ", learned opening of the other clips"
    return f"{m.range_db:g} dB, vowel {m.vowel_weight:g}, hold {m.hold}{shipped}{learned}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="lite")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lipsync")
    ap.add_argument("--clips", nargs="*", default=list(GROUND_TRUTH))
    ap.add_argument("--no-cross", action="store_true")
    ap.add_argument("--no-generic", action="store_true", help="skip the runs with the soundtrack withheld")
    ap.add_argument("--shipped", action="store_true",
                    help="score every clip with the shipped generic settings, not a leave-one-clip-out choice")
    ap.add_argument("--reverse", action="store_true",
                    help="avatar from each clip's second half, driven by its first: a split nothing was tuned on")
    ap.add_argument("--detector", choices=("facemesh", "dlib"), default="facemesh",
                    help="who reads the mouths: FaceMesh (the engine's own landmarks) or dlib's 68 points")
    ap.add_argument("--write-docs", action="store_true",
                    help="also write the table into docs/lite-engine.md (block lipsync, or lipsync-reverse, -dlib, -shipped)")
    args = ap.parse_args(argv)
    # One block per variant of the run, so a reversed or dlib run never overwrites the main table.
    variant = [v for v, on in (("reverse", args.reverse), (args.detector, args.detector != "facemesh"),
                               ("shipped", args.shipped)) if on]
    block = "-".join(["lipsync", *variant])
    if args.write_docs:
        check_block(LITE_ENGINE, block)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    measure = measure_by(args.detector)
    engine = make_engine(args.engine)
    args.out.mkdir(parents=True, exist_ok=True)
    loco = args.engine == "lite" and not args.shipped and len(args.clips) > 1
    tuning = {c: tuning_clip(c, measure) for c in GROUND_TRUTH} if loco else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        for c in args.clips:
            mapping = choose_mapping(c, tuning) if loco else None
            clip_engine = engine if mapping is None else make_engine(args.engine, mapping)
            rows.append(evaluate_clip(clip_engine, c, args.out, work, generic=not args.no_generic, measure=measure,
                                      reverse=args.reverse))
            rows[-1].mapping = "shipped" if mapping is None else describe_mapping(mapping)
            log.info("%s: generic settings %s", c, rows[-1].mapping)
        cross: list[ClipResult] = []
        if not args.no_cross:
            eng = decode_audio(MEDIA / "mt_eng.wav")
            cross.append(evaluate_cross(engine, "vr_face2", eng, "mt_eng", args.out, work, measure))
            cross.append(evaluate_cross(engine, "lp_d12", eng[: 20 * SAMPLE_RATE], "mt_eng_20s", args.out, work, measure))
            cross.append(evaluate_cross(engine, "lp_d11", halves(*load_clip("vr_face1"))[2], "vr_face1_2nd",
                                        args.out, work, measure))
    med = median_row(rows)
    table = markdown(rows, med, cross)
    log.info("%s\n\nbar met: %s", table, meets_bar(med, rows))
    (args.out / "table.md").write_text(table + "\n")
    if args.write_docs:
        write_block(LITE_ENGINE, block, f"*Engine {args.engine}, detector {args.detector}. {measured_on()}.*\n\n{table}")
    (args.out / "results.json").write_text(json.dumps(
        {"rows": [asdict(r) | {"bars_missed": clip_bars(r)} for r in rows],
         "cross": [asdict(r) | {"bars_missed": clip_bars(r)} for r in cross], "median": med,
         "bar_met": meets_bar(med, rows)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
