"""Fixtures shared by the integrations' tests: a real MuseTalk server on loopback.

The integrations (pipecat/, livekit/) run in their own venv (`.venv-integrations`: the
frameworks need protobuf 5+, the server's mediapipe needs protobuf 4), so the server is a separate
process started from the server's venv, with the lite engine and the example avatar preprocessed
through the client, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from musetalk_client import Client

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "examples" / "media"
# The server's own venv: `make install` makes it; MUSETALK_SERVER_PYTHON names another.
SERVER_PYTHON = Path(os.environ.get("MUSETALK_SERVER_PYTHON", REPO / ".venv" / "bin" / "python"))
START_TIMEOUT_S = 90.0
AVATAR_ID = "integration-face"


@dataclass
class RunningServer:
    url: str
    avatar_id: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL, as a crashed server: the integrations must notice and say so."""
        self.process.kill()
        self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(result_dir: Path, **settings: str) -> RunningServer:
    """`musetalk-server serve` (lite engine) on a free loopback port; `settings` are extra
    MUSETALK_* variables without the prefix (`realtime_max_sessions="1"`)."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO / "service"), MUSETALK_ENGINE="lite",
               MUSETALK_RESULT_DIR=str(result_dir), MUSETALK_HOST="127.0.0.1", MUSETALK_PORT=str(port))
    env.update({f"MUSETALK_{k.upper()}": v for k, v in settings.items()})
    log = result_dir.parent / f"server-{port}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen([str(SERVER_PYTHON), "-m", "musetalk_server", "serve"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.2)
    with Client(url) as client:
        client.preprocess(AVATAR_ID, MEDIA / "face.mp4")
    return RunningServer(url, AVATAR_ID, process, log)


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def musetalk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the whole run (preprocessing the avatar takes a few seconds)."""
    server = start_server(tmp_path_factory.mktemp("server") / "results")
    yield server
    stop_server(server)


@pytest.fixture
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A server of the test's own, for tests that kill it or fill it. Settings through indirect
    parametrization: `@pytest.mark.parametrize("own_server", [{"max_realtime_streams": "1"}], indirect=True)`."""
    server = start_server(tmp_path / "results", **getattr(request, "param", {}))
    yield server
    stop_server(server)
