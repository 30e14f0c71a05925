"""Load benchmark: N paced streams (`realtime=true`) at once against a real server process.

Starts `musetalk-server serve` (lite by default) on loopback, preprocesses the 512² clip
lp_d11.mp4, then for each N opens N paced streams of 9 s of speech together and measures, as a
client sees it:
- time to first frame (request sent -> first part whole), p50 and p99 over admitted streams;
- lateness: part i's arrival against arrival(0) + i/fps, the stream's own clock, p50 and p99
  over every frame of every admitted stream, and the worst stream's p99;
- refused (429 busy), errors (any other status, an error part, a lost or repeated frame).

The bar on the 2-core machine: every admitted stream keeps p99 lateness <= 40 ms at every N,
the rest are refused, no stream loses or repeats a frame.

Usage: python -m bench.load_bench [--engine lite] [--streams 1,2,4,8,16] [--seconds 9] [--write-docs]
(`--write-docs` also writes the table into docs/benchmarks.md.)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.doc_blocks import BENCHMARKS, WRITE_DOCS_HELP, measured_on, write_block
from bench.service_bench import MEDIA, cut_audio, preprocess, start_server

CLIP = "lp_d11.mp4"  # 512x512, 25 fps
AVATAR = "load512"
LATENESS_BAR_S = 0.040
_PART_HEAD = re.compile(rb"--frame\r\n(.*?)\r\n\r\n", re.S)


@dataclass
class Outcome:
    status: int = 0
    ttff: float | None = None
    arrivals: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    expected: int = 0
    fps: float = 25.0
    error_part: bool = False
    closed: bool = False

    @property
    def lateness(self) -> list[float]:
        if not self.arrivals:
            return []
        return [t - self.arrivals[0] - i / self.fps for i, t in enumerate(self.arrivals)]

    @property
    def clean(self) -> bool:
        """Every frame once, in order, then the closing boundary."""
        return self.closed and not self.error_part and self.indices == list(range(self.expected))


def run_stream(url: str, audio: Path, start: threading.Barrier) -> Outcome:
    out = Outcome()
    with httpx.Client(base_url=url, timeout=120) as client, audio.open("rb") as f:
        start.wait()
        sent = time.perf_counter()
        with client.stream("POST", f"/inference/stream/{AVATAR}", params={"realtime": "true"},
                           files={"audio_file": (audio.name, f)}) as r:
            out.status = r.status_code
            if r.status_code != 200:
                r.read()
                return out
            out.expected, out.fps = int(r.headers["x-frame-count"]), float(r.headers["x-frame-rate"])
            buf = b""
            for chunk in r.iter_bytes():
                buf += chunk
                buf = _take_parts(buf, out, sent)
            out.closed = buf.startswith(b"--frame--")
    return out


def _take_parts(buf: bytes, out: Outcome, sent: float) -> bytes:
    """Consume the whole parts at the front of `buf`, stamping each with its arrival."""
    while True:
        m = _PART_HEAD.match(buf)
        if not m:
            return buf
        headers = dict(line.split(b": ", 1) for line in m.group(1).split(b"\r\n"))
        end = m.end() + int(headers[b"Content-Length"]) + 2
        if len(buf) < end:
            return buf
        now = time.perf_counter()
        if headers.get(b"X-Stream-Error") == b"true":
            out.error_part = True
        else:
            out.indices.append(int(headers[b"X-Frame-Index"]))
            out.arrivals.append(now)
            if out.ttff is None:
                out.ttff = now - sent
        buf = buf[end:]


def run_round(url: str, audio: Path, n: int) -> list[Outcome]:
    start = threading.Barrier(n)
    results: list[Outcome | None] = [None] * n

    def one(i: int) -> None:
        try:
            results[i] = run_stream(url, audio, start)
        except httpx.HTTPError:
            results[i] = Outcome(status=-1)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r or Outcome(status=-1) for r in results]


def wait_idle(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while client.get("/health").json()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.1)


def frame_cost(client: httpx.Client) -> str:
    """The scheduler's estimate of one 512² frame's cost, from /metrics."""
    m = re.search(rb'musetalk_scheduler_frame_seconds\{engine="[a-z]+",size="512x512"\} ([0-9.e-]+)',
                  client.get("/metrics").content)
    return f"{float(m.group(1)) * 1000:.1f} ms" if m else ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def row(n: int, outcomes: list[Outcome]) -> tuple[str, ...]:
    admitted = [o for o in outcomes if o.status == 200]
    refused = sum(o.status == 429 for o in outcomes)
    errors = sum(o.status not in (200, 429) for o in outcomes) + sum(not o.clean for o in admitted)
    if not admitted:
        return (str(n), "0", "", "", "", "", "", str(refused), str(errors), "")
    ttff = [o.ttff for o in admitted if o.ttff is not None]
    late = np.array([x for o in admitted for x in o.lateness])
    worst = max(float(np.percentile(o.lateness, 99)) for o in admitted if o.lateness)
    bar = "yes" if worst <= LATENESS_BAR_S and errors == 0 else "no"
    return (str(n), str(len(admitted)), ms(statistics.median(ttff)), ms(float(np.percentile(ttff, 99))),
            ms(float(np.median(late))), ms(float(np.percentile(late, 99))), ms(worst), str(refused), str(errors), bar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="lite")
    parser.add_argument("--streams", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        audio = cut_audio(args.seconds, folder)
        proc, url = start_server(folder / "results", args.engine)
        try:
            with httpx.Client(base_url=url) as client:
                preprocess(client, AVATAR, MEDIA / CLIP)
                run_round(url, cut_audio(1, folder), 1)  # warm: the avatar in memory, a first measurement
                for n in (int(v) for v in args.streams.split(",")):
                    wait_idle(client)
                    rows.append((*row(n, run_round(url, audio, n)), frame_cost(client)))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\nengine={args.engine}, {CLIP} (512²), {args.seconds:g} s of speech, paced; machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}\n")
    table = "\n".join(["| streams | admitted | TTFF p50 | TTFF p99 | lateness p50 | lateness p99 | worst stream's p99 "
                       "| refused (429) | errors | bar met | frame cost estimate after |",
                       "|---|---|---|---|---|---|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)])
    print(table)
    if args.write_docs:
        write_block(BENCHMARKS, "load", f"*Engine {args.engine}, {CLIP} (512²), {args.seconds:g} s of speech per stream, "
                                        f"paced. {measured_on()}.*\n\n{table}")


if __name__ == "__main__":
    main()
