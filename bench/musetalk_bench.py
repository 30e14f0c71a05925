"""MuseTalk engine benchmark: frames/s of UNet + VAE decode + blend, time to first frame, GPU memory.

Models are random-initialised with upstream's exact configs (`--size full`, spec §1.2-1.4) or the
tests' tiny ones (`--size tiny`): timing does not depend on weight values. The avatar is a real
clip (vr_face2.mp4, 844x844) prepared by the engine itself.

Rows:
- batch B: UNet + VAE decode (+ uint8 and copy to the host) per batch, and the paste of each face
  into its full frame, as frames/s; the paste runs on the host, so "total" is their serial sum;
- time to first frame of a stream over 5 s and 60 s of speech (whisper on the first 30 s
  segment, then one batch): it should not grow with the audio's length;
- whole stream: frames/s of `render` from the first frame to the last, what one stream gets;
- N streams (`--streams 1,4,16,32`, `--clip lp_s18.mp4` for 720p): N renders at once on one
  engine, their frames batched across streams into one device call (engines/musetalk/batching.py):
  aggregate frames/s, per-stream frames/s and the mean frames per device call. At the same batch
  size, N = 4 should be at least the N = 1 figure.

Usage: python -m bench.musetalk_bench [--size tiny|full] [--device cpu|cuda:0] [--batches 1,8,32]
       [--inputs DIR]  (a folder from bench/gpu_inputs.py, for the GPU machine)
       [--write-docs]  (also write the tables into docs/benchmarks.md: blocks musetalk-SIZE[-streams])
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.doc_blocks import BENCHMARKS, WRITE_DOCS_HELP, measured_on, write_block

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"

from musetalk_server.engines.base import AvatarFrames, LoadedAvatar  # noqa: E402
from musetalk_server.engines.musetalk import blend  # noqa: E402
from musetalk_server.engines.musetalk.engine import MuseTalkEngine  # noqa: E402
from musetalk_server.engines.musetalk.models import MuseTalkModels  # noqa: E402
from musetalk_server.engines.musetalk.weights import dtype_for  # noqa: E402
from musetalk_server.media.frame_timing import SAMPLE_RATE, pingpong_index  # noqa: E402

CLIP = "vr_face2.mp4"
SPEECH = "mt_eng.wav"  # 60 s


def load_models(size: str, device: str) -> MuseTalkModels:
    from transformers import WhisperFeatureExtractor

    from testkit.musetalk_tiny import build_models

    dtype = dtype_for(device)
    unet, vae, whisper = build_models(size)
    move = lambda m: torch.nn.Module.to(m, device=device, dtype=dtype).eval().requires_grad_(False)  # noqa: E731
    return MuseTalkModels(unet=move(unet), vae=move(vae), extractor=WhisperFeatureExtractor(feature_size=80),
                          whisper=move(whisper.model.encoder), version="v1.5", device=device, dtype=dtype)


INPUT_FILES = {CLIP: "avatar.npz", "lp_s18.mp4": "avatar720.npz"}  # as bench/gpu_inputs.py writes them


def avatar_inputs(n_frames: int, inputs: Path | None, clip: str = CLIP) -> tuple[list[np.ndarray], np.ndarray]:
    """The first frames of the clip and their landmarks: from `inputs` (bench/gpu_inputs.py) when
    given, for machines without PyAV and MediaPipe, else decoded and detected here."""
    if inputs is not None:
        saved = np.load(inputs / INPUT_FILES[clip])
        return list(saved["frames"][:n_frames]), saved["points"][:n_frames]
    from musetalk_server.face.landmarks import detect_video
    from testkit.mediatools import first_frames

    frames = first_frames(MEDIA / clip, n_frames)
    points, _ = detect_video(frames)
    return frames, points


def speech(inputs: Path | None) -> np.ndarray:
    if inputs is not None:
        return np.load(inputs / "speech.npy")
    from musetalk_server.media.audio import decode_audio

    return decode_audio(MEDIA / SPEECH)


def make_avatar(engine: MuseTalkEngine, n_frames: int, folder: Path, inputs: Path | None,
                clip: str = CLIP) -> LoadedAvatar:
    frames, points = avatar_inputs(n_frames, inputs, clip)
    engine.prepare(AvatarFrames(frames, points, 25.0), 0, folder / "engine")
    return LoadedAvatar("bench", folder, {"fps": 25.0}, frames, points, folder / "engine")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_batch(engine: MuseTalkEngine, renderer, batch: int, repeat: int) -> tuple[float, float]:
    """Median seconds per frame of (UNet + decode, paste) over `repeat` runs, after one warm-up.

    Medians, because a shared CPU VM has neighbours: single runs vary by several times.
    """
    n = len(renderer.frames)
    src = [pingpong_index(i, n) for i in range(batch)]
    tokens = torch.randn(batch, 50, 384, device=engine.device, dtype=engine.dtype)
    faces = engine.faces(tokens, renderer.latents[src])  # warm-up: kernel selection, allocator
    model, paste = [], []
    for _ in range(repeat):
        sync(engine.device)
        t0 = time.perf_counter()
        faces = engine.faces(tokens, renderer.latents[src])  # ends with the copy to the host: synchronous
        model.append((time.perf_counter() - t0) / batch)
        t0 = time.perf_counter()
        for k, face in zip(src, faces, strict=False):
            blend.paste_face(renderer.frames[k], face, renderer.box(k), renderer.square(k), renderer.masks[k])
        paste.append((time.perf_counter() - t0) / batch)
    return statistics.median(model), statistics.median(paste)


def ttff(renderer, audio: np.ndarray, seconds: float) -> float:
    audio = audio[: int(seconds * SAMPLE_RATE)]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        frames = renderer.render(audio, 25.0)
        next(frames)
        times.append(time.perf_counter() - t0)
        frames.close()
    return statistics.median(times)


def render_fps(renderer, audio: np.ndarray, seconds: float) -> float:
    """Frames/s of a whole stream through `render` (batches, paste, all), first frame to last.

    The per-step rows add up device work and pastes; this row is what one stream gets.
    """
    times = []
    for _ in range(2):
        frames = renderer.render(audio[: int(seconds * SAMPLE_RATE)], 25.0)
        next(frames)  # whisper's first segment and the first batch: that is the TTFF row's
        t0, n = time.perf_counter(), 0
        for _frame in frames:
            n += 1
        times.append(n / (time.perf_counter() - t0))
    return statistics.median(times)


def concurrent_streams(engine: MuseTalkEngine, renderer, audio: np.ndarray, n: int, seconds: float):
    """N renders of `seconds` of audio at once: (aggregate fps, per-stream fps, frames per device call)."""
    import threading

    calls: list[int] = []
    engine.on_device_call = lambda frames, _s: calls.append(frames)
    clip = audio[: int(seconds * SAMPLE_RATE)]
    counts = [0] * n
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        start.wait()
        for _frame in renderer.render(clip, 25.0):
            counts[i] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    engine.on_device_call = None
    return sum(counts) / wall, statistics.mean(counts) / wall, statistics.mean(calls)


def machine(device: str) -> str:
    cpu = f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ", no GPU"
    return f"{platform.node()} ({cpu}{gpu}), torch {torch.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (the caller picks; nothing is guessed)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--frames", type=int, default=8, help="avatar frames to prepare")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ttff", default="5,60", help="audio lengths (s) for time to first frame; '' for none")
    parser.add_argument("--inputs", type=Path, help="folder written by bench/gpu_inputs.py (no PyAV/MediaPipe needed)")
    parser.add_argument("--streams", default="", help="concurrent stream counts, e.g. 1,4,16,32; '' for none")
    parser.add_argument("--stream-seconds", type=float, default=4.0, help="audio per concurrent stream")
    parser.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    parser.add_argument("--clip", default=CLIP, choices=tuple(INPUT_FILES), help="avatar of the concurrent rows")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]

    t0 = time.perf_counter()
    models = load_models(args.size, args.device)
    load_s = time.perf_counter() - t0
    engine = MuseTalkEngine(models=models, device=args.device, batch_size=max(1, min(8, max(batches))))
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        t0 = time.perf_counter()
        renderer = engine.open(make_avatar(engine, args.frames, Path(tmp), args.inputs))
        prep_s = time.perf_counter() - t0
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(args.device)
        rows = []
        for b in batches:
            model_s, paste_s = time_batch(engine, renderer, b, args.repeat)
            rows.append((f"batch {b}", 1 / model_s, 1 / paste_s, 1 / (model_s + paste_s)))
        lengths = [float(s) for s in args.ttff.split(",") if s]
        audio = speech(args.inputs) if lengths else np.zeros(0, np.float32)
        ttffs = [(s, ttff(renderer, audio, s)) for s in lengths]
        stream_fps = render_fps(renderer, audio, min(lengths)) if lengths else None
        many = []
        if args.streams:
            audio = audio if audio.size else speech(args.inputs)
            other = engine.open(make_avatar(engine, args.frames, Path(tmp) / "streams", args.inputs, args.clip))
            many = [(n, *concurrent_streams(engine, other, audio, n, args.stream_seconds))
                    for n in (int(v) for v in args.streams.split(",") if v)]
        peak = (f"{torch.cuda.max_memory_allocated(args.device) / 2**30:.2f} GiB"
                if args.device.startswith("cuda") else "n/a (CPU)")

    print(f"MuseTalk engine bench: size {args.size}, {args.device}, {str(engine.dtype).removeprefix('torch.')}, "
          f"{CLIP} {renderer.frames[0].shape[1]}x{renderer.frames[0].shape[0]}")
    print(f"machine: {machine(args.device)}")
    print(f"model build {load_s:.1f} s, avatar preparation ({args.frames} frames) {prep_s:.1f} s\n")
    steps = ["| step | UNet + VAE decode (fps) | paste (fps) | total (fps) |", "|---|---:|---:|---:|"]
    steps += [f"| {name} | {model_fps:.2f} | {paste_fps:.0f} | {total:.2f} |" for name, model_fps, paste_fps, total in rows]
    steps += [f"| time to first frame, {seconds:g} s audio (batch {engine.batch_size}) | {t * 1000:.0f} ms | | |"
              for seconds, t in ttffs]
    if stream_fps is not None:
        steps.append(f"| whole stream, {min(lengths):g} s audio (batch {engine.batch_size}) | | | {stream_fps:.2f} |")
    steps.append(f"| peak GPU memory | {peak} | | |")
    print("\n".join(steps))
    run = f"size {args.size}, {args.device}, {str(engine.dtype).removeprefix('torch.')}; {machine(args.device)}"
    if args.write_docs:
        write_block(BENCHMARKS, f"musetalk-{args.size}", f"*{run}. {measured_on()}.*\n\n" + "\n".join(steps))
    if many:
        print(f"\nConcurrent streams, {args.clip}, {args.stream_seconds:g} s of speech each, "
              f"MUSETALK_BATCH_SIZE {engine.batch_size}:\n")
        streams = ["| streams | aggregate frames/s | per stream frames/s | × real time per stream (25 fps) "
                   "| frames per device call |", "|---:|---:|---:|---:|---:|"]
        streams += [f"| {n} | {total:.2f} | {each:.2f} | {each / 25:.2f}× | {per_call:.1f} |"
                    for n, total, each, per_call in many]
        print("\n".join(streams))
        if args.write_docs:
            write_block(BENCHMARKS, f"musetalk-{args.size}-streams",
                        f"*{args.clip}, {args.stream_seconds:g} s of speech each, MUSETALK_BATCH_SIZE "
                        f"{engine.batch_size}; {run}. {measured_on()}.*\n\n" + "\n".join(streams))
    return 0


if __name__ == "__main__":
    sys.exit(main())
