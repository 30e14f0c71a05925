"""A clean resolution of the plugin and the client pulls no torch, no CUDA and no mediapipe: an agent
host installs only what the real-time session needs. Asks the package index (PyPI) what it would
install (`pip --dry-run --ignore-installed`), so it needs the index, not the installed venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "nvidia-", "mediapipe", "onnxruntime", "opencv-", "tensorflow")
RESOLVE_TIMEOUT_S = 300


def test_the_plugin_resolves_without_torch(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "-e", str(REPO / "clients" / "python"), "-e", str(REPO / "integrations" / "livekit")],
        capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    versions = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert {"musetalk-client", "musetalk-livekit", "livekit-agents", "livekit"} <= versions.keys()
    assert versions["livekit-agents"].startswith("1.8.")  # the tested minor version (pyproject's pin)
    heavy = sorted(name for name in versions if name.startswith(HEAVY))
    assert heavy == [], heavy
