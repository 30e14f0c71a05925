"""MuseTalk Server from Python: every call, against a running server (`make serve`).

    python examples/client_example.py [--url http://127.0.0.1:8000] [--key KEY]
        [--video ../shared/media/vr_face2.mp4] [--audio ../shared/media/vr_audio1.wav] [--out results/example]

1. preprocess the video into the avatar `example` (minutes for long clips: the client waits);
2. batch: an MP4 with the audio muxed in;
3. stream: the MJPEG parts as they are rendered;
4. realtime: a WebSocket session fed from the WAV in 20 ms chunks at real time, with idle
   before and after; every frame's JPEG and audio saved as an MP4 (media/mp4.py's writer).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "service"))

from musetalk_server.client import Client, RealtimeFrame  # noqa: E402
from musetalk_server.media.audio import decode_audio  # noqa: E402
from musetalk_server.media.mp4 import Mp4Writer  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
CHUNK_S = 0.02  # 20 ms of audio per message, as a microphone or a TTS stream sends it
IDLE_S = 1.0  # idle before the speech and after it


def feed(session, pcm: bytes, rate: int) -> None:
    """Send `pcm` in 20 ms chunks paced at real time, then `end`."""
    time.sleep(IDLE_S)
    chunk = int(CHUNK_S * rate) * 2
    t0 = time.monotonic()
    for k, start in enumerate(range(0, len(pcm), chunk)):
        session.send_audio(pcm[start:start + chunk])
        time.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.monotonic()))
    session.end()


def realtime_to_mp4(client: Client, avatar_id: str, audio_path: Path, out: Path) -> int:
    rate = 16_000
    pcm = (np.clip(decode_audio(audio_path, rate=rate), -1, 1) * 32767).astype("<i2").tobytes()
    frames: list[RealtimeFrame] = []
    with client.realtime(avatar_id, sample_rate=rate) as session:
        ready = session.ready
        print(f"  ready: {ready['width']}x{ready['height']} at {ready['fps']} fps, {ready['header_bytes']}-byte header")
        threading.Thread(target=feed, args=(session, pcm, rate), daemon=True).start()
        done_at = None
        for item in session:
            if isinstance(item, dict):
                print(f"  event: {item}")
                if item["type"] == "speech_ended":
                    done_at = len(frames) + int(IDLE_S * ready["fps"])
                continue
            frames.append(item)
            if done_at is not None and len(frames) >= done_at:
                break
    audio = np.frombuffer(b"".join(f.audio for f in frames), "<i2").astype(np.float32) / 32768
    writer = Mp4Writer(out, fps=ready["fps"], width=ready["width"], height=ready["height"], audio=audio,
                       audio_rate=rate)
    for f in frames:
        writer.write(cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR))
    writer.close()
    speaking = sum(f.speaking for f in frames)
    print(f"  {len(frames)} frames ({speaking} speaking) -> {out}")
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=None, help="MUSETALK_API_KEY, if the server has one")
    p.add_argument("--video", type=Path, default=MEDIA / "vr_face2.mp4")
    p.add_argument("--audio", type=Path, default=MEDIA / "vr_audio1.wav")
    p.add_argument("--avatar-id", default="example")
    p.add_argument("--out", type=Path, default=Path("results/example"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with Client(args.url, api_key=args.key) as client:
        print("health:", client.health()["status"])
        print(f"1. preprocess {args.video.name} as {args.avatar_id!r}")
        info = client.preprocess(args.avatar_id, args.video, overwrite=True)["info"]
        print(f"  {info['frames']} frames at {info['fps']} fps, {info['size']}")
        print("2. batch MP4")
        print("  ->", client.batch(args.avatar_id, args.audio, args.out / "batch.mp4"))
        print("3. MJPEG stream")
        parts = list(client.stream(args.avatar_id, args.audio))
        print(f"  {len(parts)} parts, the last at {parts[-1].timestamp_ms:.0f} ms")
        print("4. real-time session, 20 ms chunks at real time")
        realtime_to_mp4(client, args.avatar_id, args.audio, args.out / "realtime.mp4")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
