"""`pip install clients/python` into an empty virtual environment: no torch, no numpy, and the
example runs every call on it against a live server (the real CLI, lite engine, on loopback)."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

from bench.service_bench import start_server
from testkit.media import REPO
from testkit.mediatools import read_mp4

CLIENT = REPO / "clients" / "python"
EXAMPLE = REPO / "examples" / "client_example.py"
SPEECH_FRAMES = int(5.016 * 25)  # the example's default audio, speech_5s.wav, at the avatar's 25 fps
PIP_TIMEOUT_S = 300  # from PyPI: httpx, websockets and their few dependencies, and setuptools to build
EXAMPLE_TIMEOUT_S = 240


def run(args: list[str | Path], timeout: float, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the client and what pip says it needs, nothing more."""
    folder = tmp_path_factory.mktemp("client-venv")
    venv.EnvBuilder(with_pip=True).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", CLIENT], PIP_TIMEOUT_S, folder)
    return python


def test_the_client_installs_without_torch_or_numpy(client_venv, tmp_path):
    installed = run([client_venv, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"], 60, tmp_path)
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert {"musetalk-client", "httpx", "websockets"} <= names
    assert not names & {"torch", "numpy", "opencv-python", "opencv-contrib-python", "av", "musetalk-server"}
    where = run([client_venv, "-c", "import musetalk_client; print(musetalk_client.__file__)"], 60, tmp_path)
    assert Path(where.strip()).is_relative_to(client_venv.parents[1])  # the installed copy, not the checkout's


def test_the_example_runs_on_the_installed_client(client_venv, tmp_path):
    proc, url = start_server(tmp_path / "results", "lite")
    try:
        log = run([client_venv, EXAMPLE, "--url", url, "--out", tmp_path / "out"], EXAMPLE_TIMEOUT_S, tmp_path)
    finally:
        proc.terminate()
        proc.wait(10)
    out = tmp_path / "out"
    assert read_mp4(out / "batch.mp4").frames == SPEECH_FRAMES
    assert read_mp4(out / "job.mp4").frames == SPEECH_FRAMES
    assert f"{SPEECH_FRAMES} parts" in log
    mjpeg = (out / "realtime.mjpeg").read_bytes()
    assert mjpeg.startswith(b"\xff\xd8") and mjpeg.count(b"\xff\xd9") >= SPEECH_FRAMES
    assert "speech_ended" in log
