"""Cluster mode on the real server: the service (MUSETALK_AVATAR_SOURCE=kubernetes, the chart's
server ServiceAccount) turns an upload into an Avatar; the operator (its own ServiceAccount) makes
the Job; the real Job controller makes the Pod; the Pod's work is the Job's own entry point run
here on the shared volume folder; the stream then plays the avatar."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from k8s_real_helpers import ROOT, Cluster, Operator, eventually, service_account_kubeconfig

from helpers import LiveServer, first_stream_bytes, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings

TERMINATION_LOG = "/dev/termination-log"
# No retry: the Job's first failure ends it (the retry back-off is test_real_operator.py's business).
CHART_VALUES = {"preprocess": {"backoffLimit": 0}}
JOB_TIMEOUT_S = 180


def run_the_pods_work(job: dict[str, Any], termination_log: Path) -> int:
    """What the kubelet would run: the Job's container command and env, as a local process.

    Two things differ from a pod: the console script runs as `python -m musetalk_server` from
    this checkout, and /dev/termination-log is a temp file that is read back.
    """
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["musetalk-server", "preprocess"]
    args = [str(termination_log) if a == TERMINATION_LOG else a for a in container["args"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "service"), "GLOG_minloglevel": "2",
            "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "musetalk_server", "preprocess", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=JOB_TIMEOUT_S)
    return done.returncode


@pytest.fixture
def server_settings(cluster: Cluster, namespace: str, volume: Path, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service as the chart runs it in cluster mode, with the chart's server ServiceAccount token."""
    kubeconfig = service_account_kubeconfig(cluster, namespace, "musetalk-server", tmp_path / "server.kubeconfig")
    import kubernetes.config.kube_config

    # The client reads $KUBECONFIG once, at import time.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    return Settings(result_dir=volume, avatar_source="kubernetes", namespace=namespace, kube_poll_s=0.1,
                    preprocess_timeout_s=JOB_TIMEOUT_S, max_video_side=256, engine="lite", _env_file=None)


def test_an_upload_becomes_an_avatar_a_job_and_a_stream(cluster: Cluster, namespace: str, operator: Operator,
                                                        server_settings: Settings, volume: Path,
                                                        tmp_path: Path) -> None:
    ns = namespace
    with LiveServer(create_app(server_settings)) as server, ThreadPoolExecutor(1) as pool:
        eventually(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, timeout=60)
        video = media("vr_face2.mp4").read_bytes()
        post = pool.submit(httpx.post, f"{server.url}/avatars/preprocess", timeout=JOB_TIMEOUT_S,
                           data={"avatar_id": "news"}, files={"video_file": ("news.mp4", video, "video/mp4")})

        job = eventually(lambda: cluster.job(ns, "avatar-news-g1"), what="the Job")
        avatar = cluster.avatar(ns, "news")
        upload = avatar["metadata"]["annotations"]["musetalk.io/upload"]
        assert avatar["spec"]["videoPath"] == upload and (volume / upload).read_bytes() == video
        pod = eventually(lambda: cluster.one_pod(ns, "avatar-news-g1"), what="the Job's pod")["metadata"]["name"]
        cluster.set_pod_running(ns, pod)

        log = tmp_path / "termination-log"
        code = run_the_pods_work(job, log)
        cluster.finish_pod(ns, pod, exit_code=code, message=log.read_text())
        assert code == 0, log.read_text()

        response = post.result(timeout=JOB_TIMEOUT_S)
        assert response.status_code == 200, response.text
        info = response.json()["info"]
        assert info["frames"] == 125 and info["engine"] == "lite" and info["width"] == 256
        assert cluster.avatar(ns, "news")["status"]["frames"] == 125
        listed = httpx.get(f"{server.url}/avatars").json()["avatars"]
        assert [(a["avatar_id"], a["phase"]) for a in listed] == [("news", "Ready")]

        status, kind, data = first_stream_bytes(f"{server.url}/inference/stream/news", media("vr_audio1.wav"))
        assert status == 200 and kind.startswith("multipart/x-mixed-replace") and b"\xff\xd8" in data

        # Overwrite: the server patches the resource (its Role must allow it); the next Job fails.
        again = pool.submit(httpx.post, f"{server.url}/avatars/preprocess", timeout=JOB_TIMEOUT_S,
                            data={"avatar_id": "news", "overwrite": "true"},
                            files={"video_file": ("wall.mp4", b"not a video", "video/mp4")})
        eventually(lambda: cluster.job(ns, "avatar-news-g2"), what="the g2 Job")
        failing = eventually(lambda: cluster.one_pod(ns, "avatar-news-g2"), what="g2's pod")["metadata"]["name"]
        report = json.dumps({"detail": "no face found in the video", "code": "no_face_detected"})
        cluster.finish_pod(ns, failing, exit_code=2, message=report)
        refused = again.result(timeout=JOB_TIMEOUT_S)
        assert refused.status_code == 422
        assert refused.json() == {"detail": "no face found in the video", "code": "no_face_detected"}

        gone = httpx.delete(f"{server.url}/avatars/news")
        assert gone.status_code == 200, gone.text
        eventually(lambda: cluster.avatar_gone(ns, "news"), what="the Avatar gone")
        assert not (volume / "avatars" / "news").exists() and not (volume / upload).exists()
        assert httpx.get(f"{server.url}/avatars").json() == {"avatars": []}
