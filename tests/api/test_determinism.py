"""Identical requests give identical frames, on every output.

One in seven identical batch requests once returned an MP4 whose decoded frames differed in their
lower part: x264 cut each frame into one slice per thread and took the thread count from the CPUs
the encoding thread could use, so the lower slices were encoded differently whenever that
changed. The encoder's thread count is now fixed (media/mp4.py, ENCODER_THREADS).
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.media.mp4 import Mp4Writer
from servers import post_audio, preprocess, wait_ready
from testkit.mediatools import first_frames, parse_mjpeg, write_video

REPEATS = 4


def decoded_mp4(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def assert_same_frames(runs: list[list[np.ndarray]]) -> None:
    first = runs[0]
    assert len(first) > 0
    for n, run in enumerate(runs[1:], start=1):
        assert len(run) == len(first), f"run {n}: {len(run)} frames, not {len(first)}"
        differing = [i for i, (a, b) in enumerate(zip(first, run, strict=True)) if not np.array_equal(a, b)]
        assert differing == [], f"run {n}: frames {differing[:10]} differ from run 0"


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A lite-engine server with a 10-frame avatar `face` from vr_face2.mp4."""
    tmp = tmp_path_factory.mktemp("determinism")
    clip = write_video(first_frames(media("vr_face2.mp4"), 10), tmp / "short.mp4", "libx264", 25.0, fmt="mp4")
    settings = Settings(_env_file=None, result_dir=tmp / "results", engine="lite")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        wait_ready(server)
        assert preprocess(client, "face", clip).status_code == 200
        yield client


def test_the_same_batch_rendered_several_times_at_once_decodes_to_the_same_frames(lite):
    def batch(_: int) -> bytes:
        r = post_audio(lite, "/inference/batch/face", media("vr_audio1.wav"))
        assert r.status_code == 200, r.text
        return r.content

    with ThreadPoolExecutor(REPEATS) as pool:
        files = list(pool.map(batch, range(REPEATS)))
    assert_same_frames([decoded_mp4(f) for f in files])
    assert len(set(files)) == 1  # the files themselves, byte for byte


def test_an_async_job_and_a_stream_give_the_batch_frames(lite):
    r = post_audio(lite, "/inference/batch/face?async=true", media("vr_audio1.wav"))
    assert r.status_code == 202
    status_url = r.json()["status_url"]
    while lite.get(status_url).json()["state"] in ("queued", "running"):
        time.sleep(0.1)
    job_mp4 = lite.get(f"{status_url}/result")
    batch = post_audio(lite, "/inference/batch/face", media("vr_audio1.wav"))
    assert job_mp4.status_code == batch.status_code == 200
    assert_same_frames([decoded_mp4(batch.content), decoded_mp4(job_mp4.content)])
    streams = [parse_mjpeg(post_audio(lite, "/inference/stream/face", media("vr_audio1.wav")).content)[0]
               for _ in range(2)]
    assert [p.body for p in streams[0]] == [p.body for p in streams[1]]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to change the encoder's CPU count")
def test_the_mp4_does_not_depend_on_the_cpus_the_encoder_may_use(tmp_path):
    rng = np.random.default_rng(7)
    frames = [np.clip(rng.normal(128, 40, (512, 512, 3)), 0, 255).astype(np.uint8) for _ in range(6)]
    all_cpus = os.sched_getaffinity(0)

    def encode(out: Path, cpus: set[int]) -> bytes:
        os.sched_setaffinity(0, cpus)
        try:
            writer = Mp4Writer(out, fps=25.0, width=512, height=512, audio=np.zeros(9600, np.float32),
                               audio_rate=48_000)
            for frame in frames:
                writer.write(frame)
            writer.close()
        finally:
            os.sched_setaffinity(0, all_cpus)
        return out.read_bytes()

    one_cpu = encode(tmp_path / "one.mp4", {min(all_cpus)})
    every_cpu = encode(tmp_path / "all.mp4", all_cpus)
    assert_same_frames([decoded_mp4(every_cpu), decoded_mp4(one_cpu)])
