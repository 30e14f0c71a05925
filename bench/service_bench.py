"""Service benchmark: the lite (or any) engine through real HTTP on loopback, as a user sees it.

Starts `musetalk-server serve` in a subprocess with a throw-away result dir, then measures:
- preprocessing: seconds of work per second of source video;
- streaming: time to first frame and frames/s at 512² and 720p, for 5 s and 60 s of audio;
- batch: seconds of work per second of audio for the MP4.

Prints a Markdown table; `--write-docs` also writes it into docs/benchmarks.md.
Usage: python -m bench.service_bench [--engine lite] [--repeat 2] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.doc_blocks import BENCHMARKS, WRITE_DOCS_HELP, measured_on, write_block

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
CLIPS = {"512²": "lp_d11.mp4", "720p": "lp_s18.mp4"}  # 512x512 25 fps, 1280x720 30 fps
AUDIO = "mt_eng.wav"  # 60 s of English speech


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(result_dir: Path, engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, MUSETALK_PORT=str(port), MUSETALK_RESULT_DIR=str(result_dir), MUSETALK_ENGINE=engine,
               PYTHONPATH=str(REPO / "service"), GLOG_minloglevel="2")
    proc = subprocess.Popen([sys.executable, "-m", "musetalk_server", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def cut_audio(seconds: float, folder: Path) -> Path:
    import wave

    src = MEDIA / AUDIO
    with wave.open(str(src)) as w:
        frames = w.readframes(int(seconds * w.getframerate()))
        params = w.getparams()
    out = folder / f"speech_{seconds:g}s.wav"
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return out


def preprocess(client: httpx.Client, avatar_id: str, clip: Path) -> tuple[float, float]:
    with clip.open("rb") as f:
        t = time.perf_counter()
        r = client.post("/avatars/preprocess", data={"avatar_id": avatar_id, "overwrite": "true"},
                        files={"video_file": (clip.name, f)}, timeout=600)
        elapsed = time.perf_counter() - t
    r.raise_for_status()
    return elapsed, r.json()["info"]["source"]["duration_s"]


def stream(client: httpx.Client, avatar_id: str, audio: Path) -> tuple[float, float, int]:
    """(time to first frame, frames/s over the whole stream, frames)."""
    with audio.open("rb") as f:
        t = time.perf_counter()
        first, buf = None, b""
        with client.stream("POST", f"/inference/stream/{avatar_id}", files={"audio_file": (audio.name, f)},
                           timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                if first is None:
                    buf += chunk
                    if buf.count(b"--frame") >= 2:  # the first part is whole once the second begins
                        first = time.perf_counter() - t
        total = time.perf_counter() - t
    frames = int(r.headers["x-frame-count"])
    return first or total, frames / total, frames


def batch(client: httpx.Client, avatar_id: str, audio: Path, seconds: float) -> float:
    with audio.open("rb") as f:
        t = time.perf_counter()
        r = client.post(f"/inference/batch/{avatar_id}", files={"audio_file": (audio.name, f)}, timeout=900)
        elapsed = time.perf_counter() - t
    r.raise_for_status()
    return elapsed / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="lite")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        audio = {5: cut_audio(5, folder), 60: MEDIA / AUDIO}
        proc, url = start_server(folder / "results", args.engine)
        rows = []
        try:
            with httpx.Client(base_url=url) as client:
                for label, clip in CLIPS.items():
                    took, duration = preprocess(client, label.replace("²", "sq"), MEDIA / clip)
                    avatar = label.replace("²", "sq")
                    stream(client, avatar, audio[5])  # warm: loads the avatar into memory
                    for seconds, path in audio.items():
                        runs = [stream(client, avatar, path) for _ in range(args.repeat)]
                        ttff = statistics.median(r[0] for r in runs)
                        fps = statistics.median(r[1] for r in runs)
                        rows.append((label, f"stream {seconds} s", f"{ttff * 1000:.0f} ms", f"{fps:.0f}",
                                     f"{fps / 25:.1f}×", ""))
                    per_s = statistics.median(batch(client, avatar, audio[60], 60) for _ in range(args.repeat))
                    rows.append((label, "batch MP4 60 s", "", "", f"{1 / per_s:.1f}×", f"{per_s:.3f} s/s"))
                    rows.append((label, f"preprocess {clip}", "", "", "", f"{took / duration:.2f} s/s"))
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"\nengine={args.engine}  machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}\n")
    table = "\n".join(["| size | run | time to first frame | frames/s | × real time (25 fps) | work per second of media |",
                       "|---|---|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in rows)])
    print(table)
    if args.write_docs:
        write_block(BENCHMARKS, "service", f"*Engine {args.engine}, medians of {args.repeat} runs. {measured_on()}.*\n\n{table}")


if __name__ == "__main__":
    main()
