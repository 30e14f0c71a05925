"""A real nginx in front of several servers on loopback: its own config in a tmp folder, started
and stopped by its PID. Round robin, as an ingress spreads requests over a Service's pods, and
set up as the chart's ingress annotations set ingress-nginx (docs/kubernetes.md, "Routing")."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT_S = 10.0

# Streams go out as they are made (no response buffering). Request bodies are buffered, so that
# a request a replica refuses before any work (503 not_ready while it drains), or whose replica
# is gone (connection refused), can go to the next one: nginx resends only a body it holds.
_CONFIG = """
daemon off;
user {user} {group};
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size 200m;
    upstream musetalk {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://musetalk;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """`with Nginx(["127.0.0.1:8001", ...], folder) as lb:` balances over those until the block ends."""

    def __init__(self, backends: list[str], folder: Path) -> None:
        self.folder, self.port = Path(folder), _free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        # A replica that refused a connection is left out for a second, as a failing pod's endpoint is.
        servers = "\n".join(f"        server {b} max_fails=1 fail_timeout=1s;" for b in backends)
        self.config = self.folder / "nginx.conf"
        # Workers run as this user (root's default would be nobody, who cannot enter pytest's tmp folders).
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        self.config.write_text(_CONFIG.format(folder=self.folder, servers=servers, port=self.port, user=user,
                                              group=group))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Nginx:
        # -e: nginx opens its compiled-in error log before reading the config, unless told otherwise.
        self.proc = subprocess.Popen([NGINX, "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                      "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                httpx.get(f"{self.url}/health/live", timeout=1)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.1)

    def log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: open connections finish
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
