"""The CLI runs the same pipeline as the service; `preprocess` is the Kubernetes Job's entry."""

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO, media
from testkit.mediatools import read_mp4


def run_cli(*args: str, result_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "service"), MUSETALK_RESULT_DIR=str(result_dir),
               MUSETALK_ENGINE="lite", GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "musetalk_server", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_preprocess_then_render(tmp_path):
    results = tmp_path / "results"
    term = tmp_path / "termination-log"
    p = run_cli("preprocess", "--avatar-id", "cli1", "--video", str(media("vr_face2.mp4")),
                "--result-json", str(term), result_dir=results)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["avatar_id"] == "cli1" and out["info"]["frames"] == 125
    assert json.loads(term.read_text()) == out
    assert (results / "avatars" / "cli1" / "manifest.json").is_file()

    # The same command again (a Job retried, a script re-run): exit 0 with the avatar already there.
    p = run_cli("preprocess", "--avatar-id", "cli1", "--video", str(media("vr_face2.mp4")), result_dir=results)
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout.strip().splitlines()[-1])
    assert again == {**out, "message": "Avatar already processed (same video and bbox_shift)"}

    mp4 = tmp_path / "out.mp4"
    p = run_cli("render", "--avatar-id", "cli1", "--audio", str(media("vr_audio1.wav")), "--out", str(mp4),
                result_dir=results)
    assert p.returncode == 0, p.stderr
    assert read_mp4(mp4).frames == 125


def test_preprocess_errors_exit_2_with_json(tmp_path):
    term = tmp_path / "termination-log"
    p = run_cli("preprocess", "--avatar-id", "bad", "--video", str(media("vr_audio1.wav")),
                "--result-json", str(term), result_dir=tmp_path / "results")
    assert p.returncode == 2
    assert json.loads(term.read_text())["code"] == "unsupported_media"
    p = run_cli("preprocess", "--avatar-id", "../x", "--video", str(media("vr_face2.mp4")),
                result_dir=tmp_path / "results")
    assert p.returncode == 2 and json.loads(p.stderr.strip().splitlines()[-1])["code"] == "invalid_avatar_id"
    assert not (tmp_path / "results" / "avatars" / "bad").exists()
