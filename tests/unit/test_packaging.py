"""What each wheel carries: the server's holds the server and the operator only (not testkit/,
bench/ or the client), and the client's holds the client only. Built from copies in a temporary
folder, because a build writes build/ and *.egg-info next to its sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from testkit.media import REPO

BUILD_TIMEOUT_S = 300
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


def wheel_packages(source: Path, out: Path) -> set[str]:
    """The top-level names inside the wheel pip builds from `source` (no network: the venv's setuptools)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=BUILD_TIMEOUT_S)
    [wheel] = out.glob("*.whl")
    return {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if not name.split("/")[0].endswith(".dist-info")}


def test_the_server_wheel_holds_the_server_and_the_operator_only(tmp_path):
    source = tmp_path / "src"
    for name in ("service", "operator", "testkit", "bench", "clients"):
        shutil.copytree(REPO / name, source / name, ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    assert wheel_packages(source, tmp_path / "wheel") == {"musetalk_server", "musetalk_operator"}


def test_the_client_wheel_holds_the_client_only(tmp_path):
    source = tmp_path / "client"
    shutil.copytree(REPO / "clients" / "python", source, ignore=IGNORED)
    assert wheel_packages(source, tmp_path / "wheel") == {"musetalk_client"}
