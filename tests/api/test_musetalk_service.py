"""The musetalk engine for real, over HTTP: tiny random models in upstream's layout, a real clip."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.avatars.preprocess import preprocess_avatar
from musetalk_server.avatars.store import AvatarStore
from musetalk_server.config import Settings
from musetalk_server.engines.lite import LiteEngine
from musetalk_server.engines.musetalk.engine import MASKS_FILE, SQUARES_FILE
from musetalk_server.errors import WeightsError
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE, pingpong_index
from musetalk_server.runtime import choose_engine
from servers import post_audio, preprocess, wait_ready
from testkit.mediatools import parse_mjpeg, read_mp4

SECONDS = 2.0
FPS = 25


def speech_wav(dst: Path, seconds: float) -> Path:
    samples = decode_audio(media("vr_audio1.wav"))[: int(seconds * SAMPLE_RATE)]
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return dst


@pytest.fixture(scope="module")
def served(tmp_path_factory, musetalk_dir):
    tmp = tmp_path_factory.mktemp("mt")
    results = tmp / "results"
    app = create_app(Settings(_env_file=None, result_dir=results, engine="musetalk", model_dir=musetalk_dir,
                              batch_size=8))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        wait_ready(server)
        r = preprocess(client, "seed", media("seed_short_test_video.mp4"))
        assert r.status_code == 200, r.text
        yield client, app, AvatarStore(results / "avatars"), speech_wav(tmp / "speech.wav", SECONDS), r.json()


def test_health_reports_the_musetalk_engine(served):
    client, *_ = served
    body = client.get("/health").json()
    assert body["engine"] == "musetalk" and body["models"] == {"loaded": True, "device": "cpu"}
    info = body["engine_info"]
    assert info["version"] == "v1.5" and info["dtype"] == "float32" and info["blend_mask"] == "landmarks"
    assert client.get("/health/ready").status_code == 200


def test_avatar_info_says_how_it_was_made(served):
    *_, made = served
    info = made["info"]
    engine_info = info["engine_info"]
    assert info["engine"] == "musetalk" and info["frames"] == 25
    assert engine_info["version"] == "v1.5" and engine_info["blend_mask"] == "landmarks"
    assert engine_info["extra_margin"] == 10 and engine_info["latents"] == "posterior mean"


def test_stream_yields_floor_seconds_x_fps_decodable_frames(served):
    client, _, store, wav, _ = served
    r = post_audio(client, "/inference/stream/seed", wav)
    assert r.status_code == 200, r.text
    parts, closed = parse_mjpeg(r.content)
    assert closed and len(parts) == int(SECONDS * FPS)
    h, w = store.load("seed").frames[0].shape[:2]
    for part in parts:
        img = cv2.imdecode(np.frombuffer(part.body, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (h, w, 3)


def test_batch_mp4_has_every_frame_and_the_audio(served, tmp_path):
    client, _, _, wav, _ = served
    r = post_audio(client, "/inference/batch/seed", wav)
    assert r.status_code == 200, r.text
    out = tmp_path / "o.mp4"
    out.write_bytes(r.content)
    facts = read_mp4(out)
    assert facts.frames == int(SECONDS * FPS) and facts.fps == pytest.approx(FPS)
    assert abs(facts.audio_seconds - SECONDS) < 0.06


def test_raw_frames_change_only_inside_the_blend_mask(served):
    _client, app, store, wav, _ = served
    engine = app.state.musetalk.runtime.engine
    avatar = store.load("seed")
    squares = np.load(avatar.engine_dir / SQUARES_FILE)
    with np.load(avatar.engine_dir / MASKS_FILE) as z:
        masks = [z[k] for k in sorted(z.files)]
    audio = decode_audio(wav)
    frames = list(engine.open(avatar).render(audio, FPS))
    assert len(frames) == int(SECONDS * FPS)
    changed = 0
    for i in (0, 1, 24, 25, 26, 49):  # across the ping-pong turn at 25
        k = pingpong_index(i, len(avatar.frames))
        src, out = avatar.frames[k], frames[i]
        inside = np.zeros(src.shape[:2], bool)
        x0, y0, x1, y1 = (int(v) for v in squares[k])
        h, w = src.shape[:2]
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        inside[fy0:fy1, fx0:fx1] = masks[k][fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] > 0
        assert np.array_equal(out[~inside], src[~inside]), f"frame {i}: pixels outside the mask changed"
        changed += int(np.abs(out[inside].astype(int) - src[inside]).max() > 0)
    assert changed > 0, "nothing was pasted"


def test_a_lite_avatar_on_a_musetalk_server_is_409(served, tmp_path):
    client, _, store, wav, _ = served
    preprocess_avatar(media("seed_short_test_video.mp4"), "made-by-lite", engine=LiteEngine(), store=store)
    r = post_audio(client, "/inference/stream/made-by-lite", wav)
    assert r.status_code == 409 and r.json()["code"] == "avatar_engine_mismatch"
    assert "lite" in r.json()["detail"] and "musetalk" in r.json()["detail"]


def test_a_musetalk_avatar_on_a_lite_server_is_409(served):
    _, _, store, wav, _ = served
    app = create_app(Settings(_env_file=None, result_dir=store.root.parent, engine="lite"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as lite:
        r = post_audio(lite, "/inference/stream/seed", wav)
    assert r.status_code == 409 and r.json()["code"] == "avatar_engine_mismatch"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_musetalk_with_missing_weights_refuses_to_start(tmp_path):
    settings = Settings(_env_file=None, result_dir=tmp_path / "results", engine="musetalk",
                        model_dir=tmp_path / "empty")
    with pytest.raises(WeightsError, match="musetalkV15/unet.pth.*whisper/preprocessor_config.json"):
        choose_engine(settings)
    with pytest.raises(RuntimeError, match="did not start"), LiveServer(create_app(settings)):
        pass


def test_broken_weights_keep_the_server_unready_naming_the_file(musetalk_dir, tmp_path):
    import shutil

    import torch

    models = Path(shutil.copytree(musetalk_dir, tmp_path / "models"))
    state = torch.load(models / "musetalkV15" / "unet.pth", weights_only=True)
    state["conv_in.weight"] = state["conv_in.weight"][:, :4]  # a 4-channel (plain SD) input layer
    torch.save(state, models / "musetalkV15" / "unet.pth")
    app = create_app(Settings(_env_file=None, result_dir=tmp_path / "results", engine="musetalk", model_dir=models))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while app.state.musetalk.runtime.load_error is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.get("/health/ready")
        assert r.status_code == 503 and "musetalkV15/unet.pth" in r.json()["detail"]
        assert "conv_in.weight" in r.json()["detail"]
        assert client.get("/health").json()["models"]["loaded"] is False


def test_cli_preprocess_and_render_with_musetalk(musetalk_dir, tmp_path):
    """The Kubernetes Job's entry point (`preprocess`) and `render`, on the musetalk engine."""
    import json
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO / "service"), MUSETALK_RESULT_DIR=str(tmp_path / "results"),
               MUSETALK_ENGINE="musetalk", MUSETALK_MODEL_DIR=str(musetalk_dir), GLOG_minloglevel="2")
    run = lambda *args: subprocess.run([sys.executable, "-m", "musetalk_server", *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    p = run("preprocess", "--avatar-id", "cli", "--video", str(media("seed_short_test_video.mp4")))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.strip().splitlines()[-1])["info"]
    assert info["engine"] == "musetalk" and info["engine_info"]["blend_mask"] == "landmarks"
    wav = speech_wav(tmp_path / "a.wav", 1.0)
    p = run("render", "--avatar-id", "cli", "--audio", str(wav), "--out", str(tmp_path / "o.mp4"))
    assert p.returncode == 0, p.stderr
    assert read_mp4(tmp_path / "o.mp4").frames == FPS
