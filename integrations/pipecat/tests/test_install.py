"""A clean resolution of the integration, as pip would install it on an empty machine, pulls no
torch, no CUDA wheel, no mediapipe and no OpenCV (the avatar is rendered by the server)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

RESOLVE_TIMEOUT_S = 600  # pip fetches every dependency's metadata from PyPI
NOT_WANTED = ("torch", "nvidia-", "mediapipe", "opencv-")


def test_the_integration_resolves_without_torch_or_opencv(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report),
         "-e", str(REPO / "clients" / "python"), "-e", f"{REPO / 'integrations' / 'pipecat'}[example]"],
        capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"musetalk-client", "musetalk-pipecat", "pipecat-ai", "aiortc"} <= names
    assert not [n for n in names if n.startswith(NOT_WANTED)], sorted(names)
