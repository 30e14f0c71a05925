"""MuseTalk Server from Python, with the `musetalk-client` package alone: every call, against a
running server (`make serve`). Needs only the client (`pip install clients/python`): no numpy,
no codecs.

    python examples/client_example.py [--url http://127.0.0.1:8000] [--key KEY]
        [--video examples/media/face.mp4] [--audio examples/media/speech_5s.wav] [--out results/example]

1. preprocess the video into the avatar `example` (minutes for long clips: the client waits);
2. batch: an MP4 with the audio muxed in;
3. stream: the MJPEG parts as they are rendered;
4. async job: the same MP4 rendered in the background, polled, then fetched;
5. realtime: a WebSocket session fed from the WAV in 20 ms chunks at real time, with idle
   before and after; the frames saved as Motion JPEG (`ffplay realtime.mjpeg`) and their
   audio as a WAV.
"""

from __future__ import annotations

import argparse
import array
import threading
import time
import wave
from pathlib import Path

from musetalk_client import Client, RealtimeFrame, RealtimeSession

MEDIA = Path(__file__).resolve().parent / "media"
CHUNK_S = 0.02  # 20 ms of audio per message, as a microphone or a TTS stream sends it
IDLE_S = 1.0  # idle before the speech and after it
JOB_POLL_S = 0.5
PCM16_BYTES = 2


def read_pcm16_mono(path: Path) -> tuple[bytes, int]:
    """A PCM16 WAV's samples as mono PCM16 (channels averaged) and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != PCM16_BYTES:
            raise SystemExit(f"{path}: the example sends PCM16 WAVs; this one has {8 * wav.getsampwidth()}-bit samples")
        channels, rate = wav.getnchannels(), wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    if channels > 1:
        samples = array.array("h", (sum(samples[i:i + channels]) // channels for i in range(0, len(samples), channels)))
    return samples.tobytes(), rate


def feed(session: RealtimeSession, pcm: bytes, rate: int) -> None:
    """Send `pcm` in 20 ms chunks paced at real time, then `end`."""
    time.sleep(IDLE_S)
    chunk = int(CHUNK_S * rate) * PCM16_BYTES
    t0 = time.monotonic()
    for k, start in enumerate(range(0, len(pcm), chunk)):
        session.send_audio(pcm[start:start + chunk])
        time.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.monotonic()))
    session.end()


def realtime_to_files(client: Client, avatar_id: str, audio_path: Path, out: Path) -> int:
    """One utterance through a real-time session; its frames into out.mjpeg, their audio into out.wav."""
    pcm, rate = read_pcm16_mono(audio_path)
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
    out.with_suffix(".mjpeg").write_bytes(b"".join(f.jpeg for f in frames))
    with wave.open(str(out.with_suffix(".wav")), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(PCM16_BYTES)
        wav.setframerate(rate)
        wav.writeframes(b"".join(f.audio for f in frames))
    speaking = sum(f.speaking for f in frames)
    print(f"  {len(frames)} frames ({speaking} speaking) -> {out.with_suffix('.mjpeg')}, {out.with_suffix('.wav')}")
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=None, help="MUSETALK_API_KEY, if the server has one")
    p.add_argument("--video", type=Path, default=MEDIA / "face.mp4")
    p.add_argument("--audio", type=Path, default=MEDIA / "speech_5s.wav")
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
        print("4. async job")
        job = client.submit_batch(args.avatar_id, args.audio)
        while client.job(job["job_id"])["state"] in ("queued", "running"):
            time.sleep(JOB_POLL_S)
        print("  ->", client.job_result(job["job_id"], args.out / "job.mp4"))
        print("5. real-time session, 20 ms chunks at real time")
        realtime_to_files(client, args.avatar_id, args.audio, args.out / "realtime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
