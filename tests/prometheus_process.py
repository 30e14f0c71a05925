"""A real Prometheus (Debian's `prometheus` package) on loopback, scraping given targets every
second, with its own config and storage in a temporary folder; stopped by its PID."""

from __future__ import annotations

import math
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_INTERVAL_S = 1
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Target:
    """One scrape target and the labels the scrape adds, as a ServiceMonitor's would
    (namespace, service, pod)."""

    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusProcess:
    """`with PrometheusProcess(tmp, targets) as prom:` scrapes until the block ends."""

    def __init__(self, folder: Path, targets: list[Target]) -> None:
        self.folder, self.port = folder, _free_port()
        self.targets = targets
        self.proc: subprocess.Popen | None = None
        self.log = folder / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        jobs: dict[str, list[dict[str, Any]]] = {}
        for t in self.targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": t.labels})
        interval = f"{SCRAPE_INTERVAL_S}s"
        return {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                "scrape_configs": [{"job_name": job, "static_configs": static} for job, static in jobs.items()]}

    def __enter__(self) -> PrometheusProcess:
        config = self.folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not get ready")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_targets_up(self, timeout: float = 15.0) -> None:
        """Until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        while True:
            active = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            if len(active) == len(self.targets) and all(t["health"] == "up" for t in active):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not all up: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in active]}")
            time.sleep(0.2)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": labels, "value": float}], or AssertionError with
        Prometheus' own complaint for an expression it refuses."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def finite(samples: list[dict[str, Any]]) -> bool:
    """Some data, and no NaN in it (a histogram quantile with nothing observed is NaN)."""
    return bool(samples) and all(math.isfinite(s["value"]) for s in samples)
