"""The real app with the fake engine in its own process, for faults a thread cannot take:
`kill -9`, a file-size limit, a private temp folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers import REPO

# The file-size limit is set by the child itself, first thing: not by a preexec_fn, because Python
# code run between fork and exec in a process with other threads can hang there (a thread's
# locals freed in the child wait on threads the child does not have).
_LAUNCH = """
import json, resource, signal, sys
if sys.argv[6] != "-":  # RLIMIT_FSIZE, SIGXFSZ ignored: an oversized write fails with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[6]), int(sys.argv[6])))
import uvicorn
from fakes import FakeEngine
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.serve import serve
result_dir, port, settings, engine = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
settings = Settings(_env_file=None, result_dir=result_dir, host="127.0.0.1", port=port, **settings)
app = create_app(settings, engine=FakeEngine(**engine))
if sys.argv[5] == "drain":  # as `musetalk-server serve` runs: SIGTERM drains (api/shutdown.py)
    serve(settings, app, log_level="warning")
else:
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(result_dir) as srv:` runs a server until the block ends (or `kill()`).

    `max_file_bytes` sets RLIMIT_FSIZE with SIGXFSZ ignored, so an oversized write fails with
    EFBIG, as a full disk fails with ENOSPC. `tmpdir` gives the process its own TMPDIR, `env`
    more variables (a KUBECONFIG). `drain=True` serves as `musetalk-server serve` does, SIGTERM
    draining first; `stop()` then `start()` restarts it on the same port.
    """

    def __init__(self, result_dir: Path, *, settings: dict | None = None, engine: dict | None = None,
                 max_file_bytes: int | None = None, tmpdir: Path | None = None, env: dict | None = None,
                 drain: bool = False) -> None:
        self.result_dir, self.port = Path(result_dir), _free_port()
        self._args = [sys.executable, "-c", _LAUNCH, str(result_dir), str(self.port),
                      json.dumps(settings or {}), json.dumps(engine or {}), "drain" if drain else "plain",
                      "-" if max_file_bytes is None else str(max_file_bytes)]
        self._tmpdir, self._env = tmpdir, env or {}
        self.proc: subprocess.Popen | None = None
        self.log = self.result_dir.parent / f"server-{self.port}.log"  # stderr: its log lines

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("service", "tests")), **self._env)
        if self._tmpdir is not None:
            env["TMPDIR"] = str(self._tmpdir)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self._args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, and wait for the process to exit (a draining one ends its work first). Its exit code."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
