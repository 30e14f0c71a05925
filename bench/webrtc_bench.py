"""WebRTC benchmark: bits per viewer at matched picture quality, CPU per session and per viewer, and
sessions a machine holds on time over WebRTC against over the WebSocket.

1. Picture quality and bits (lite engine, 512² lp_d11 and 720p lp_s18, 25 fps, 5 s of speech.wav's
   speech). The frames the engine renders are coded as the socket sends them (JPEG, quality
   MUSETALK_JPEG_QUALITY = 85) and as a session's broadcast does (webrtc/encoders.py with the
   server's default settings), decoded back (libavcodec, what aiortc and browsers use), and
   compared with the rendered frames: PSNR (dB, all three colour channels) and bits per second.
   "JPEG at matched PSNR" is the lowest JPEG quality whose PSNR reaches H.264's.
2. CPU per session (512²): a server process (`musetalk-server serve`), one session fed over the
   WebSocket (speech in a loop), and 0, 1, 3, 10 WebRTC viewers; the server's CPU (utime + stime
   from /proc) over a window, the encoder's own CPU (musetalk_webrtc_encode_seconds) and the bytes
   each viewer was sent.
3. Sessions on time (512²): k sessions at once, over the WebSocket, then over WebRTC (each fed by
   a peer's microphone track), k = 1, 2, ...: admitted by the device scheduler or refused (busy:
   its own judgement of what it can keep on time), and the share of frames that left more than one
   frame period late (musetalk_realtime_frame_lateness_seconds), after a warm-up.
The bench's own viewers do not decode video (a browser decodes on its own machine): its aiortc
receivers get a decoder that drops frames, so the 2 cores are the server's.

Prints Markdown tables; `--write-docs` writes them into docs/webrtc.md.
Usage: python -m bench.webrtc_bench [--seconds 5] [--window 6] [--max-sessions 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import av
import cv2
import httpx
import numpy as np

from bench.doc_blocks import DOCS, WRITE_DOCS_HELP, check_block, measured_on, write_block
from bench.service_bench import MEDIA, start_server
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.i420 import to_i420
from musetalk_server.media.jpeg import encode_jpeg
from musetalk_server.webrtc.encoders import H264, VideoEncoder, VideoOptions
from testkit.live_server import LiveServer
from testkit.mediatools import first_frames, write_video

WEBRTC_DOC = DOCS / "webrtc.md"
REPO = Path(__file__).resolve().parents[1]
FPS = 25
CLIPS = {"512²": "lp_d11.mp4", "720p": "lp_s18.mp4"}  # 512x512 and 1280x720
SPEECH_FROM_S = 3.0  # speech.wav opens on 3 s of silence
VIEWERS = (0, 1, 3, 10)
LATE_S = 1 / FPS  # a frame this late has missed its own period
WARM_UP_S = 2.0  # sessions open, peers connect, encoders start: not measured


def speech_16k(seconds: float) -> np.ndarray:
    x = decode_audio(REPO / "examples" / "media" / "speech.wav")
    start = int(SPEECH_FROM_S * 16_000)
    return x[start:start + int(seconds * 16_000)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))


# --- 1. quality and bits ------------------------------------------------------------------------

def jpeg_at(frames: list[np.ndarray], quality: int) -> tuple[float, float]:
    """(kbit/s, mean PSNR) of the frames as JPEGs at `quality`."""
    sizes, scores = [], []
    for f in frames:
        jpeg = encode_jpeg(f, quality)
        sizes.append(len(jpeg))
        scores.append(psnr(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), f))
    return float(np.mean(sizes)) * 8 * FPS / 1000, float(np.mean(scores))


def h264_at(frames: list[np.ndarray], options: VideoOptions) -> tuple[float, float, float]:
    """(kbit/s, mean PSNR, encoder CPU ms per frame) of the frames through the session's encoder."""
    h, w = frames[0].shape[:2]
    encoder = VideoEncoder(H264, w - w % 2, h - h % 2, FPS, options)
    decoder = av.CodecContext.create("h264", "r")
    size, scores = 0, []
    for i, f in enumerate(frames):
        for packet in encoder.encode(to_i420(f), i, keyframe=i == 0):
            size += packet.size
            for decoded in decoder.decode(packet):
                scores.append(psnr(decoded.to_ndarray(format="bgr24"), frames[len(scores)][:h - h % 2, :w - w % 2]))
    return size * 8 * FPS / 1000 / len(frames), float(np.mean(scores)), encoder.seconds / len(frames) * 1000


def quality_rows(results: Path, seconds: float) -> list[tuple[str, ...]]:
    s = Settings(_env_file=None)
    options = VideoOptions(crf=s.webrtc_video_crf, max_kbps=s.webrtc_max_video_kbps, keyframe_s=4.0,
                           preset=s.webrtc_x264_preset)
    audio = speech_16k(seconds)
    rows = []
    with LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as server:
        runtime = server.server.config.app.state.musetalk.runtime
        for label in CLIPS:
            renderer = runtime.rendering.checks.avatar(avatar_id(label)).renderer
            frames = list(renderer.render(audio, FPS))
            jpeg_kbps, jpeg_psnr = jpeg_at(frames, s.jpeg_quality)
            h264_kbps, h264_psnr, encode_ms = h264_at(frames, options)
            matched = next(((q, *jpeg_at(frames, q)) for q in range(30, 101, 5) if jpeg_at(frames, q)[1] >= h264_psnr),
                           None)
            match = f"{matched[1]:.0f} kbit/s (q{matched[0]}, {matched[2]:.1f} dB)" if matched else "none ≤ q100"
            rows.append((label, f"{jpeg_kbps:.0f} kbit/s, {jpeg_psnr:.1f} dB", f"{h264_kbps:.0f} kbit/s, "
                         f"{h264_psnr:.1f} dB", match, f"{encode_ms:.1f} ms", f"{encode_ms * FPS / 10:.1f} %"))
    return rows


# --- 2. and 3.: a server process, sessions over the socket and over WebRTC ------------------------

def avatar_id(label: str) -> str:
    return "a512" if label == "512²" else "a720"


def prepare(results: Path) -> None:
    """Both avatars from the first 2 s of their clips (an in-process server, the same result dir)."""
    with tempfile.TemporaryDirectory() as tmp, \
            LiveServer(create_app(Settings(_env_file=None, result_dir=results, engine="lite"))) as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        for label, clip in CLIPS.items():
            path = write_video(first_frames(MEDIA / clip, 50), Path(tmp) / f"{label}.mp4", "libx264", FPS)
            with path.open("rb") as f:
                r = client.post("/avatars/preprocess", data={"avatar_id": avatar_id(label)},
                                files={"video_file": (path.name, f)})
            r.raise_for_status()


def no_decoding() -> None:
    """The bench's viewers drop what they receive instead of decoding it (module doc)."""
    import aiortc.rtcrtpreceiver as receiver

    class _Drop:
        def decode(self, encoded_frame):
            return []

    receiver.get_decoder = lambda codec: _Drop()  # type: ignore[assignment]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    out = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(("musetalk_webrtc_", "musetalk_realtime_frame_lateness")) and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def late_share(before: dict[str, float], after: dict[str, float]) -> tuple[int, float]:
    """(frames sent, share later than LATE_S) between two scrapes of the lateness histogram."""
    def count(d, le):
        return d.get(f'musetalk_realtime_frame_lateness_seconds_bucket{{le="{le}"}}', 0.0)
    total = count(after, "+Inf") - count(before, "+Inf")
    on_time = count(after, "0.04") - count(before, "0.04")
    return int(total), (total - on_time) / total if total else 0.0


async def talk_over_socket(url: str, avatar: str, stop: asyncio.Event, speech: np.ndarray,
                           session_id: asyncio.Future | None = None) -> dict:
    """One session over the WebSocket, speaking `speech` in a loop (then `end`, a 0.5 s pause) until `stop`;
    `session_id` gets the session's id from its `ready` event."""
    from websockets.asyncio.client import connect

    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    out: dict = {"frames": 0}
    try:
        async with connect(url.replace("http", "ws") + f"/inference/realtime/{avatar}", max_size=None) as ws:
            out["ready"] = json.loads(await ws.recv())
            if session_id is not None:
                session_id.set_result(out["ready"]["session_id"])

            if out["ready"].get("type") != "ready":  # refused: the `error` event, then the close code
                out["refused"] = out["ready"].get("code", "refused")
                return out

            async def drain():
                with contextlib.suppress(Exception):  # the session's close, however it comes
                    async for message in ws:
                        out["frames"] += isinstance(message, bytes)

            reader = asyncio.create_task(drain())
            t0, sent = time.monotonic(), 0
            while not stop.is_set():
                for at in range(0, len(pcm), 640):
                    await ws.send(pcm[at:at + 640])
                    sent += 1
                    await asyncio.sleep(max(0.0, t0 + sent * 0.02 - time.monotonic()))
                    if stop.is_set():
                        break
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.sleep(0.5)
                t0, sent = time.monotonic(), 0
            reader.cancel()
    except Exception as e:  # a refusal closes the socket with 4429 busy
        out["refused"] = str(e)
    return out


async def viewers_rows(url: str, pid: int, window_s: float) -> list[tuple[str, ...]]:
    from testkit.webrtc_peer import ClientPeer

    speech = speech_16k(2.0)
    rows = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        session = asyncio.create_task(talk_over_socket(url, avatar_id("512²"), stop, speech, ready))
        peers: list[ClientPeer] = []
        await asyncio.wait_for(asyncio.shield(ready), 30)
        await asyncio.sleep(2.0)
        for n in VIEWERS:
            while len(peers) < n:
                peer = ClientPeer(feeder=False, keep_frames=False)
                r = await peer.connect(client, f"/inference/webrtc/sessions/{ready.result()}")
                r.raise_for_status()
                peers.append(peer)
            await asyncio.sleep(WARM_UP_S)  # connected, past the key frame
            m0, c0, t0 = await scrape(client), cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(window_s)
            m1, c1, t1 = await scrape(client), cpu_seconds(pid), time.monotonic()
            dt = t1 - t0
            cpu = (c1 - c0) / dt * 100
            encode = (m1.get('musetalk_webrtc_encode_seconds_sum{codec="H264"}', 0)
                      - m0.get('musetalk_webrtc_encode_seconds_sum{codec="H264"}', 0)) / dt * 100
            sent = (m1.get('musetalk_webrtc_bytes_sent_total{kind="video"}', 0)
                    - m0.get('musetalk_webrtc_bytes_sent_total{kind="video"}', 0)
                    + m1.get('musetalk_webrtc_bytes_sent_total{kind="audio"}', 0)
                    - m0.get('musetalk_webrtc_bytes_sent_total{kind="audio"}', 0))
            _, late = late_share(m0, m1)
            encoders = m1.get('musetalk_webrtc_encoders{codec="H264"}', 0)
            per_viewer = f"{sent * 8 / dt / 1000 / n:.0f} kbit/s" if n else ""
            rows.append((str(n), f"{cpu:.0f} %", f"{encode:.1f} %" if n else "", per_viewer,
                         f"{encoders:.0f}", f"{late * 100:.1f} %"))
        stop.set()
        await session
        for peer in peers:
            await peer.close()
    return rows


async def capacity_rows(url: str, max_sessions: int, window_s: float) -> list[tuple[str, ...]]:
    """k = 1 .. max_sessions sessions at once over each transport: admitted, and frames late after a warm-up."""
    from testkit.webrtc_peer import ClientPeer, SpeechTrack

    speech = speech_16k(2.0)
    speech48 = np.interp(np.arange(len(speech) * 3) / 3, np.arange(len(speech)), speech).astype(np.float32)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for transport in ("WebSocket", "WebRTC"):
            for k in range(1, max_sessions + 1):
                stop = asyncio.Event()
                peers: list[ClientPeer] = []
                refused = 0
                if transport == "WebSocket":
                    tasks = [asyncio.create_task(talk_over_socket(url, avatar_id("512²"), stop, speech))
                             for _ in range(k)]
                else:
                    for _ in range(k):
                        mic = SpeechTrack(np.tile(np.concatenate([speech48, np.zeros(24_000, np.float32)]), 20))
                        peer = ClientPeer(mic=mic, keep_frames=False)
                        r = await peer.connect(client, f"/inference/webrtc/{avatar_id('512²')}")
                        refused += r.status_code == 429
                        peers.append(peer)
                await asyncio.sleep(WARM_UP_S)
                m0 = await scrape(client)
                await asyncio.sleep(window_s)
                m1 = await scrape(client)
                stop.set()
                if transport == "WebSocket":
                    refused = sum("refused" in o for o in await asyncio.gather(*tasks))
                for peer in peers:
                    if peer.location:
                        await client.delete(peer.location)
                    await peer.close()
                _, late = late_share(m0, m1)
                rows.append((transport, str(k), str(k - refused), f"{late * 100:.1f} %"))
                await asyncio.sleep(1.0)
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="speech rendered for the quality table")
    p.add_argument("--window", type=float, default=6.0, help="seconds each CPU or capacity step is measured")
    p.add_argument("--max-sessions", type=int, default=4)
    p.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    args = p.parse_args(argv)
    if args.write_docs:
        check_block(WEBRTC_DOC, "webrtc-bench")
    no_decoding()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        prepare(results)
        quality = quality_rows(results, args.seconds)
        proc, url = start_server(results, "lite")
        try:
            viewers = asyncio.run(viewers_rows(url, proc.pid, args.window))
            capacity = asyncio.run(capacity_rows(url, args.max_sessions, args.window))
        finally:
            proc.terminate()
            proc.wait(10)
    body = "\n\n".join([
        f"*{measured_on()}. Lite engine, 25 fps.*",
        table(("avatar", "WebSocket JPEG q85", "WebRTC H.264", "JPEG at matched PSNR", "encode / frame",
               "encode CPU / session"), quality),
        table(("viewers of one 512² session", "server CPU", "of which H.264 encoding", "sent per viewer",
               "encoders", "frames late"), viewers),
        table(("transport", "sessions opened", "admitted", "frames over a frame period late"), capacity),
    ])
    print(body)
    if args.write_docs:
        write_block(WEBRTC_DOC, "webrtc-bench", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
