"""Load benchmark: N paced streams (`realtime=true`) at once against a real server process.

Starts `musetalk-server serve` (lite by default) on loopback, preprocesses the 512² clip
lp_d11.mp4, then for each N opens N paced streams of 9 s of speech together, `--repeats` times
(each a fresh burst on an idle server), and reports the worst run of each N: admission must hold
every time, not on average. Per run it measures, as a client sees it:
- time to first frame (request sent -> first part whole), p50 and p99 over admitted streams;
- lateness: part i's arrival against arrival(0) + i/fps, the stream's own clock, p50 and p99
  over every frame of every admitted stream, and the worst stream's p99;
- refused (429 busy), errors (any other status, an error part, a lost or repeated frame).

The bar on the 2-core machine: in every run, every admitted stream keeps p99 lateness <= 40 ms
at every N, the rest are refused, no stream loses or repeats a frame. The worst run is the one
whose worst stream's p99 is highest (a run with errors counts as worse than any).

Usage: python -m bench.load_bench [--engine lite] [--streams 1,2,4,8,16] [--seconds 9] [--repeats 10] [--write-docs]
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
REFUSAL_WINDOW_S = 3.0  # between runs: longer than the scheduler's memory of a late frame (LATE_WINDOW_S)
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


@dataclass(frozen=True)
class Run:
    n: int
    outcomes: list[Outcome]

    @property
    def admitted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    @property
    def refused(self) -> int:
        return sum(o.status == 429 for o in self.outcomes)

    @property
    def errors(self) -> int:
        return sum(o.status not in (200, 429) for o in self.outcomes) + sum(not o.clean for o in self.admitted)

    @property
    def worst_p99(self) -> float:
        """The worst admitted stream's p99 lateness (0 when none was admitted)."""
        return max((float(np.percentile(o.lateness, 99)) for o in self.admitted if o.lateness), default=0.0)

    @property
    def met(self) -> bool:
        return self.worst_p99 <= LATENESS_BAR_S and self.errors == 0

    def badness(self) -> tuple[int, float]:
        return (self.errors > 0, self.worst_p99)


def row(run: Run, runs: list[Run]) -> tuple[str, ...]:
    """The worst run's figures, and over every run: how many met the bar, how many were admitted."""
    admitted = run.admitted
    counts = sorted(len(r.admitted) for r in runs)
    summary = (f"{sum(r.met for r in runs)}/{len(runs)}", f"{counts[0]}-{counts[-1]}")
    if not admitted:
        return (str(run.n), "0", "", "", "", "", "", str(run.refused), str(run.errors), "yes" if run.met else "no",
                *summary)
    ttff = [o.ttff for o in admitted if o.ttff is not None]
    late = np.array([x for o in admitted for x in o.lateness])
    return (str(run.n), str(len(admitted)), ms(statistics.median(ttff)), ms(float(np.percentile(ttff, 99))),
            ms(float(np.median(late))), ms(float(np.percentile(late, 99))), ms(run.worst_p99), str(run.refused),
            str(run.errors), "yes" if run.met else "no", *summary)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="lite")
    parser.add_argument("--streams", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    args = parser.parse_args()
    rows, loads = [], [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        audio = cut_audio(args.seconds, folder)
        proc, url = start_server(folder / "results", args.engine)
        try:
            with httpx.Client(base_url=url) as client:
                preprocess(client, AVATAR, MEDIA / CLIP)
                run_round(url, cut_audio(1, folder), 1)  # warm: the avatar in memory, a first measurement
                for n in (int(v) for v in args.streams.split(",")):
                    runs = []
                    for _ in range(args.repeats):
                        wait_idle(client)
                        time.sleep(REFUSAL_WINDOW_S)
                        runs.append(Run(n, run_round(url, audio, n)))
                    rows.append((*row(max(runs, key=Run.badness), runs), frame_cost(client)))
        finally:
            proc.terminate()
            proc.wait(30)
    loads.append(load_average())
    print(f"\nengine={args.engine}, {CLIP} (512²), {args.seconds:g} s of speech, paced, {args.repeats} runs per N; "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; load average (1, 5, 15 min) {loads[0]} before, {loads[1]} after\n")
    note = "Each row is the worst of its runs; the last columns count over all of them."
    table = "\n".join(["| streams | admitted | TTFF p50 | TTFF p99 | lateness p50 | lateness p99 | worst stream's p99 "
                       "| refused (429) | errors | bar met | runs meeting the bar | admitted over the runs "
                       "| frame cost estimate after |",
                       "|---|---|---|---|---|---|---|---|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)])
    print(f"{note}\n\n{table}")
    if args.write_docs:
        write_block(BENCHMARKS, "load", f"*Engine {args.engine}, {CLIP} (512²), {args.seconds:g} s of speech per stream, "
                                        f"paced, {args.repeats} runs per N. {note} {measured_on()}.*\n\n{table}")


if __name__ == "__main__":
    main()
