"""Real-time session benchmark: WS /inference/realtime/{avatar_id} as a live client sees it.

Starts `musetalk-server serve` (service_bench.start_server) with a throw-away result dir,
preprocesses lp_d11 (512², 25 fps), then for 1 and for N concurrent sessions: each session idles
0.5 s, then speaks `--utterances` utterances of 1 s of mt_eng.wav sent in 20 ms chunks at real
time, each followed by `end` and 0.3 s of idle (plus a random fraction of a frame, so the
utterances start at every phase of the frame clock). Measured at the client:
- first-speech latency: first chunk of an utterance sent -> its first speaking frame received;
- frame lateness: arrival of frame g against the session's clock (origin = the earliest
  arrival minus g/F, so lateness is >= 0 and a perfect clock reads 0);
- underrun frames; CPU of the server process per session (% of one core).

Prints a Markdown table; `--write-docs` also writes it into docs/benchmarks.md.
Usage: python -m bench.realtime_bench [--sessions 4] [--utterances 20] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.doc_blocks import BENCHMARKS, WRITE_DOCS_HELP, measured_on, write_block
from bench.service_bench import MEDIA, start_server
from musetalk_client import Client
from musetalk_server.media.audio import decode_audio

CHUNK_S = 0.02
UTTERANCE_S = 1.0
PAUSE_S = 0.3
LEAD_IDLE_S = 0.5
FLAG_SPEAKING, FLAG_UNDERRUN = 1, 4


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def one_session(url: str, avatar: str, speech: np.ndarray, utterances: int, out: dict) -> None:
    """Run one session; fills `out` with latencies, frame arrivals and underruns."""
    from websockets.sync.client import connect

    ws_url = url.replace("http", "ws") + f"/inference/realtime/{avatar}"
    arrivals, latencies, underruns = [], [], 0
    sent_at: dict[int, float] = {}
    ended = threading.Event()
    with connect(ws_url, max_size=None) as ws:
        ready = json.loads(ws.recv(timeout=30))
        fps = ready["fps"]

        def feed() -> None:
            rng = np.random.default_rng(len(sent_at))
            time.sleep(LEAD_IDLE_S)
            chunk = int(CHUNK_S * 16_000)
            for n in range(1, utterances + 1):
                start = (n * 7919 * chunk) % (len(speech) - int(UTTERANCE_S * 16_000))
                pcm = (np.clip(speech[start:start + int(UTTERANCE_S * 16_000)], -1, 1) * 32767).astype("<i2").tobytes()
                t0 = time.monotonic()
                sent_at[n] = t0
                for k in range(0, len(pcm), 2 * chunk):
                    ws.send(pcm[k:k + 2 * chunk])
                    time.sleep(max(0.0, t0 + (k // (2 * chunk) + 1) * CHUNK_S - time.monotonic()))
                ended.clear()
                ws.send(json.dumps({"type": "end"}))
                ended.wait(10)
                # A random phase against the frame clock, as real speech has: the wait for the
                # next tick (0 to 1/F) is part of the latency.
                time.sleep(PAUSE_S + rng.uniform(0, 1 / fps))
            ws.send(json.dumps({"type": "ping"}))  # the last pong ends the run

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        seen: set[int] = set()
        while True:
            m = ws.recv(timeout=30)
            now = time.monotonic()
            if isinstance(m, str):
                event = json.loads(m)
                if event["type"] == "speech_ended":
                    ended.set()
                elif event["type"] == "pong":
                    break
                continue
            _magic, index, _pts, utt, flags, _r, _n = struct.unpack_from("<4sIIIHHI", m)
            arrivals.append((index, now))
            if flags & FLAG_UNDERRUN:
                underruns += 1
            if utt and flags & FLAG_SPEAKING and utt not in seen:
                seen.add(utt)
                latencies.append(now - sent_at[utt])
    index = np.array([a[0] for a in arrivals], float)
    t = np.array([a[1] for a in arrivals])
    offset = t - index / fps
    out.update(latency=latencies, lateness=list(offset - offset.min()), underruns=underruns, frames=len(arrivals))


def run(url: str, pid: int, avatar: str, speech: np.ndarray, sessions: int, utterances: int) -> dict:
    outs: list[dict] = [{} for _ in range(sessions)]
    threads = [threading.Thread(target=one_session, args=(url, avatar, speech, utterances, o)) for o in outs]
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    lat = np.concatenate([o["latency"] for o in outs]) * 1000
    late = np.concatenate([o["lateness"] for o in outs]) * 1000
    return {
        "sessions": sessions, "utterances": len(lat),
        "first_p50": np.percentile(lat, 50), "first_p99": np.percentile(lat, 99),
        "late_p50": np.percentile(late, 50), "late_p99": np.percentile(late, 99),
        "underruns": sum(o["underruns"] for o in outs), "frames": sum(o["frames"] for o in outs),
        "cpu": 100 * cpu / wall / sessions,
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| sessions | utterances | first speech p50 / p99 | frame lateness p50 / p99 | underrun frames | "
             "CPU per session |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sessions']} | {r['utterances']} | {r['first_p50']:.0f} / {r['first_p99']:.0f} ms | "
                     f"{r['late_p50']:.1f} / {r['late_p99']:.1f} ms | {r['underruns']} of {r['frames']} | "
                     f"{r['cpu']:.0f} % of a core |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="lite")
    p.add_argument("--sessions", type=int, default=4, help="N for the concurrent row")
    p.add_argument("--utterances", type=int, default=20, help="per session")
    p.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    args = p.parse_args(argv)
    speech = decode_audio(MEDIA / "mt_eng.wav")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "results", args.engine)
        try:
            with Client(url) as c:
                c.preprocess("bench", MEDIA / "lp_d11.mp4")
            rows = [run(url, proc.pid, "bench", speech, n, args.utterances) for n in (1, args.sessions)]
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"Real-time sessions, engine {args.engine}, lp_d11 (512²) at 25 fps, "
          f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print(markdown(rows))
    if args.write_docs:
        write_block(BENCHMARKS, "realtime", f"*Engine {args.engine}, lp_d11 (512²) at 25 fps, {args.utterances} utterances "
                                            f"per session. {measured_on()}.*\n\n{markdown(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
