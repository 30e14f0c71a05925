"""scripts/k8s_control_plane.py's own logic, without building or starting anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import k8s_control_plane as cp  # noqa: E402

DEB822 = """Types: deb
# a comment inside the block
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Enabled: yes

Types: deb
URIs: http://other.invalid/apt
Suites: nodistro
Components: main
"""


def test_the_private_sources_reuse_the_machines_mirror_with_deb_src(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    blocks = [dict(line.split(": ", 1) for line in block.splitlines())
              for block in cp.private_sources(tmp_path).strip().split("\n\n")]
    assert blocks == [
        {"Types": "deb deb-src", "URIs": "http://mirror.invalid/debian", "Suites": "bookworm", "Components": "main",
         "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
        {"Types": "deb deb-src", "URIs": "http://mirror.invalid/debian-security", "Suites": "bookworm-security",
         "Components": "main"},
    ]


def test_one_line_sources_count_too_and_a_missing_suite_is_named(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n# deb http://x y main\n")
    with pytest.raises(cp.ControlPlaneError, match="bookworm-security"):
        cp.private_sources(tmp_path)
    (tmp_path / "sources.list").write_text((tmp_path / "sources.list").read_text()
                                           + "deb http://mirror.invalid/security bookworm-security main\n")
    text = cp.private_sources(tmp_path)
    assert "URIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\nSigned-By: /k.gpg" in text
    assert "URIs: http://mirror.invalid/security\nSuites: bookworm-security" in text


def test_stop_ends_only_the_pids_it_wrote(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "pids.json").write_text(json.dumps({"etcd": ours.pid}))
        cp.stop(tmp_path)
        assert ours.wait(timeout=5) is not None and other.poll() is None
        assert not (tmp_path / "pids.json").exists()
        cp.stop(tmp_path)  # nothing left to stop: a no-op
    finally:
        other.kill()
        other.wait()


def test_the_cache_lives_outside_the_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MUSETALK_K8S_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cp.bin_dir() == tmp_path / "musetalk-k8s" / cp.KUBE_VERSION / "bin"
    monkeypatch.setenv("MUSETALK_K8S_CACHE", str(tmp_path / "elsewhere"))
    assert cp.cache_dir() == tmp_path / "elsewhere"
