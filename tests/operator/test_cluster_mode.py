"""Cluster mode end to end, without a cluster: two server replicas (real uvicorn on loopback) in
MUSETALK_AVATAR_SOURCE=kubernetes, the real operator (Kopf) and the emulated API server (kmock).
The test plays the Job controller and the kubelet; the Job's work itself is the real preprocessing
function on a real clip, writing into the temp "volume" both replicas read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_helpers import (
    AVATAR,
    AVATARS_URL,
    JOB,
    NS,
    ROOT,
    current,
    eventually,
    finish_pod,
    operator,
    set_job_status,
)

from fakes import FakeEngine
from helpers import LiveServer, first_stream_bytes, media
from musetalk_server.api import create_app
from musetalk_server.avatars.idempotency import SOURCE_ANNOTATION
from musetalk_server.avatars.info import ALREADY_PROCESSED, AvatarInfo, PreprocessResult
from musetalk_server.avatars.kube import failure_error, upload_name
from musetalk_server.avatars.preprocess import PreprocessLimits, preprocess_avatar
from musetalk_server.avatars.store import AvatarStore
from musetalk_server.config import Settings
from musetalk_server.errors import EngineError, NoFaceDetected

COMPLETE = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def settings_for(volume: Path) -> Settings:
    return Settings(result_dir=volume, avatar_source="kubernetes", namespace=NS, kube_poll_s=0.05,
                    preprocess_timeout_s=60, max_video_side=256, _env_file=None)


def run_job_work(job: dict[str, Any]) -> dict[str, Any]:
    """What the Job's container does, minus the process: the CLI's preprocessing on its arguments.

    The fake engine stands in for the CLI's engine so the servers (which serve with it) can load
    the result; the decoding, face landmarks and atomic store are the real code.
    """
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--") and not args[i + 1].startswith("--")}
    assert "--overwrite" in args and flags["--result-json"] == "/dev/termination-log"
    manifest = preprocess_avatar(
        Path(flags["--video"]), flags["--avatar-id"], engine=FakeEngine(),
        store=AvatarStore(Path(flags["--result-dir"]) / "avatars"), bbox_shift=int(flags["--bbox-shift"]),
        overwrite=True, limits=PreprocessLimits(float(flags.get("--fps", 25)), max_side=256))
    return PreprocessResult(flags["--avatar-id"], AvatarInfo.from_manifest(manifest)).to_dict()


@pytest.fixture
def job_volume(volume: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The "Job pods" of this test see the volume where the operator does: at the temp folder.
    monkeypatch.setenv("MUSETALK_OPERATOR_JOB_DATA_DIR", str(volume))
    return volume


async def test_an_upload_becomes_a_resource_and_every_replica_serves_it(k8s: Any, job_volume: Path) -> None:
    volume = job_volume
    async with operator() as runner:
        with LiveServer(create_app(settings_for(volume), engine=FakeEngine())) as a, \
             LiveServer(create_app(settings_for(volume), engine=FakeEngine())) as b:
            video = media("vr_face2.mp4").read_bytes()
            post = asyncio.create_task(asyncio.to_thread(
                httpx.post, f"{a.url}/avatars/preprocess", timeout=60,
                data={"avatar_id": "anchor", "bbox_shift": "2"}, files={"video_file": ("face.mp4", video, "video/mp4")}))

            job = await eventually(lambda: current(k8s, JOB, "avatar-anchor-g1"))
            avatar = current(k8s, AVATAR, "anchor")
            upload = avatar["metadata"]["annotations"]["musetalk.io/upload"]
            assert avatar["spec"]["videoPath"] == upload and (volume / upload).read_bytes() == video
            await set_job_status(k8s, "avatar-anchor-g1", {"active": 1, "ready": 1})
            result = await asyncio.to_thread(run_job_work, job)
            await finish_pod(k8s, "avatar-anchor-g1", "anchor", exit_code=0, message=json.dumps(result))
            await set_job_status(k8s, "avatar-anchor-g1", {"active": 0, **COMPLETE})

            response = await post
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["message"] == "Avatar processed successfully" and body["avatar_id"] == "anchor"
            assert body["info"]["frames"] == 125 and body["info"]["bbox_shift"] == 2
            assert current(k8s, AVATAR, "anchor")["status"]["frames"] == 125

            # The other replica lists and streams it: it reads the same volume.
            listed = (await asyncio.to_thread(httpx.get, f"{b.url}/avatars")).json()["avatars"]
            assert [(x["avatar_id"], x["phase"], x["info"]["frames"]) for x in listed] == [("anchor", "Ready", 125)]
            status, kind, data = await asyncio.to_thread(first_stream_bytes, f"{b.url}/inference/stream/anchor",
                                                         media("vr_audio1.wav"))
            assert status == 200 and kind.startswith("multipart/x-mixed-replace") and b"\xff\xd8" in data

            # The same upload again (a client's retry): the avatar there, no new Job, no upload kept.
            sha256 = hashlib.sha256(video).hexdigest()
            assert current(k8s, AVATAR, "anchor")["metadata"]["annotations"][SOURCE_ANNOTATION] == sha256
            retry = await asyncio.to_thread(
                httpx.post, f"{b.url}/avatars/preprocess", timeout=30,
                data={"avatar_id": "anchor", "bbox_shift": "2"}, files={"video_file": ("face.mp4", video, "video/mp4")})
            assert retry.status_code == 200, retry.text
            assert retry.json() == {**body, "message": ALREADY_PROCESSED}
            assert current(k8s, AVATAR, "anchor")["metadata"]["generation"] == 1
            with pytest.raises(KeyError):
                current(k8s, JOB, "avatar-anchor-g2")
            assert sorted(p.name for p in (volume / "uploads").iterdir()) == [Path(upload).name]
            shifted = await asyncio.to_thread(
                httpx.post, f"{b.url}/avatars/preprocess", timeout=30,
                data={"avatar_id": "anchor"}, files={"video_file": ("face.mp4", video, "video/mp4")})
            assert shifted.status_code == 409 and "its bbox_shift is 2, not 0" in shifted.json()["detail"]

            # Taken again without overwrite: refused before any upload is kept.
            again = await asyncio.to_thread(httpx.post, f"{a.url}/avatars/preprocess", timeout=30,
                                            data={"avatar_id": "anchor"}, files={"video_file": ("f.mp4", b"x", "video/mp4")})
            assert again.status_code == 409 and again.json()["code"] == "avatar_exists"

            # Deleting through the API deletes the resource; the finalizer removes files and upload.
            gone = await asyncio.to_thread(httpx.delete, f"{b.url}/avatars/anchor")
            assert gone.status_code == 200
            await eventually(lambda: k8s.objects[AVATAR, NS, "anchor"].deleted)
            assert not (volume / "avatars" / "anchor").exists() and not (volume / upload).exists()
            assert (await asyncio.to_thread(httpx.get, f"{a.url}/avatars")).json() == {"avatars": []}
    assert runner.exception is None


async def test_a_failed_job_answers_like_local_mode(k8s: Any, job_volume: Path) -> None:
    async with operator() as runner:
        with LiveServer(create_app(settings_for(job_volume), engine=FakeEngine())) as server:
            post = asyncio.create_task(asyncio.to_thread(
                httpx.post, f"{server.url}/avatars/preprocess", timeout=60,
                data={"avatar_id": "wall"}, files={"video_file": ("wall.mp4", b"not really a face", "video/mp4")}))
            await eventually(lambda: current(k8s, JOB, "avatar-wall-g1"))
            report = {"detail": "no face found in the video", "code": "no_face_detected"}
            await finish_pod(k8s, "avatar-wall-g1", "wall", exit_code=2, message=json.dumps(report))
            await set_job_status(k8s, "avatar-wall-g1", {"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
            response = await post
            assert response.status_code == 422
            assert response.json() == {"detail": "no face found in the video", "code": "no_face_detected"}
            listed = (await asyncio.to_thread(httpx.get, f"{server.url}/avatars")).json()["avatars"]
            assert listed[0]["phase"] == "Failed" and "info" not in listed[0]
            shown = (await asyncio.to_thread(httpx.get, f"{server.url}/avatars/wall")).json()
            assert shown == listed[0] and shown["message"]
            bad = await asyncio.to_thread(httpx.post, f"{server.url}/avatars/preprocess", timeout=30,
                                          data={"avatar_id": "Not_A_Dns_Label"}, files={"video_file": ("f.mp4", b"x")})
            assert bad.status_code == 422 and bad.json()["code"] == "invalid_avatar_id"
            bad = await asyncio.to_thread(httpx.delete, f"{server.url}/avatars/Not_A_Dns_Label", timeout=30)
            assert bad.status_code == 422 and bad.json()["code"] == "invalid_avatar_id"
    assert runner.exception is None


async def test_an_avatar_applied_with_kubectl_is_served(k8s: Any, job_volume: Path) -> None:
    async with operator() as runner:
        with LiveServer(create_app(settings_for(job_volume), engine=FakeEngine())) as server:
            (job_volume / "uploads").mkdir()
            (job_volume / "uploads" / "clip.mp4").write_bytes(media("vr_face2.mp4").read_bytes())
            body = {"apiVersion": "musetalk.io/v1", "kind": "Avatar", "metadata": {"name": "kubectl-made"},
                    "spec": {"videoPath": "uploads/clip.mp4", "engine": "lite"}}
            assert (await k8s.post(AVATARS_URL, json=body)).status in (200, 201)
            job = await eventually(lambda: current(k8s, JOB, "avatar-kubectl-made-g1"))
            listed = (await asyncio.to_thread(httpx.get, f"{server.url}/avatars")).json()["avatars"]
            assert [(x["avatar_id"], x["phase"]) for x in listed] == [("kubectl-made", "Pending")]
            # Shown alone as it is listed: a Pending avatar was a 404, a Ready one had no phase.
            shown = await asyncio.to_thread(httpx.get, f"{server.url}/avatars/kubectl-made")
            assert shown.status_code == 200 and shown.json() == listed[0]
            result = await asyncio.to_thread(run_job_work, job)
            await finish_pod(k8s, "avatar-kubectl-made-g1", "kubectl-made", exit_code=0, message=json.dumps(result))
            await set_job_status(k8s, "avatar-kubectl-made-g1", COMPLETE)
            await eventually(lambda: current(k8s, AVATAR, "kubectl-made")["status"]["phase"] == "Ready")
            shown = await asyncio.to_thread(httpx.get, f"{server.url}/avatars/kubectl-made")
            assert shown.status_code == 200 and shown.json()["info"]["frames"] == 125
            assert shown.json()["phase"] == "Ready" and shown.json()["message"]
            missing = await asyncio.to_thread(httpx.get, f"{server.url}/avatars/never-made")
            assert missing.status_code == 404 and missing.json()["code"] == "avatar_not_found"
    assert runner.exception is None


def test_failures_map_back_to_the_local_error() -> None:
    err = failure_error("no_face_detected: no face in frame 3")
    assert isinstance(err, NoFaceDetected) and err.detail == "no face in frame 3"
    assert isinstance(failure_error("OOMKilled: (Job has reached the specified backoff limit)"), EngineError)
    assert upload_name("a", "0123abcd", ".MP4") == "uploads/a-0123abcd.mp4"
    assert upload_name("a", "0123abcd", ".m p4") == "uploads/a-0123abcd"


class RecordingApi:
    """Stands in for CustomObjectsApi: returns raw bodies like the real one with _preload_content=False."""

    def __init__(self, existing: dict[str, Any] | None) -> None:
        self.existing, self.calls = existing, []

    def _raw(self, body: Any) -> Any:
        return type("Raw", (), {"data": json.dumps(body).encode()})()

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self.existing is None:
            raise ApiException(status=404)
        return self._raw(self.existing)

    def patch_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str,
                                       body: dict[str, Any], **kw: Any) -> Any:
        self.calls.append(body)
        return self._raw({"metadata": {"name": name, "generation": 2}})


def test_overwrite_replaces_the_whole_spec_and_hands_back_the_old_upload(tmp_path: Path) -> None:
    from musetalk_server.avatars.kube import AvatarResources

    existing = {"metadata": {"name": "a", "generation": 1, "annotations": {"musetalk.io/upload": "uploads/a-old.mp4"}},
                "spec": {"videoUrl": "https://x/y.mp4", "bboxShift": 1, "engine": "lite"}}
    api = RecordingApi(existing)
    resources = AvatarResources(settings_for(tmp_path), api=api)
    spec = {"videoPath": "uploads/a-new.mp4", "bboxShift": 0, "engine": "lite", "fps": 25.0}
    assert resources.submit("a", spec, "uploads/a-new.mp4", overwrite=True) == (2, "uploads/a-old.mp4")
    assert api.calls[0]["spec"] == {"videoUrl": None, **spec}
    with pytest.raises(Exception, match="already exists"):
        resources.submit("a", spec, "uploads/a-new.mp4", overwrite=False)


async def run_job_for_real(job: dict[str, Any], termination_log: Path) -> int:
    """Play the kubelet: run the Job's container command as a process, as the pod would.

    Only two things differ from a pod: the console script runs as `python -m musetalk_server`
    from this checkout, and /dev/termination-log is a temp file the test reads back.
    """
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["musetalk-server", "preprocess"]
    args = [str(termination_log) if a == "/dev/termination-log" else a for a in container["args"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'service'}", "GLOG_minloglevel": "2"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "musetalk_server", "preprocess", *args,
                                                   env=env, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(process.wait(), timeout=120)


async def test_the_jobs_real_entry_point_builds_an_avatar_the_service_serves(
        k8s: Any, job_volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings reach the Job through the operator's config, as the chart passes them.
    monkeypatch.setenv("MUSETALK_OPERATOR_JOB_ENV", json.dumps({"MUSETALK_MAX_VIDEO_SIDE": "256"}))
    settings = settings_for(job_volume).model_copy(update={"engine": "lite"})
    async with operator() as runner:
        with LiveServer(create_app(settings)) as server:  # the real lite engine, loaded in the lifespan
            await eventually(lambda: httpx.get(f"{server.url}/health/ready").status_code == 200, timeout=60)
            video = media("vr_face2.mp4").read_bytes()
            post = asyncio.create_task(asyncio.to_thread(
                httpx.post, f"{server.url}/avatars/preprocess", timeout=120,
                data={"avatar_id": "news"}, files={"video_file": ("news.mp4", video, "video/mp4")}))
            job = await eventually(lambda: current(k8s, JOB, "avatar-news-g1"))
            assert current(k8s, AVATAR, "news")["spec"]["engine"] == "lite"
            await set_job_status(k8s, "avatar-news-g1", {"active": 1, "ready": 1})

            log = tmp_path / "termination-log"
            code = await run_job_for_real(job, log)
            await finish_pod(k8s, "avatar-news-g1", "news", exit_code=code, message=log.read_text())
            assert code == 0, log.read_text()
            await set_job_status(k8s, "avatar-news-g1", {"active": 0, **COMPLETE})

            response = await post
            assert response.status_code == 200, response.text
            info = response.json()["info"]
            assert info["frames"] == 125 and info["engine"] == "lite" and info["width"] == 256
            assert info["source"]["sha256"] == hashlib.sha256(video).hexdigest()
            status, _kind, data = await asyncio.to_thread(first_stream_bytes, f"{server.url}/inference/stream/news",
                                                         media("vr_audio1.wav"))
            assert status == 200 and b"\xff\xd8" in data
    assert current(k8s, AVATAR, "news")["status"]["frames"] == 125
    assert runner.exception is None


def test_auto_on_a_gpu_in_cluster_mode_without_weights_refuses_to_start(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent CPU engine on GPU nodes: the pod's start fails, naming the weights and both fixes."""
    import torch

    from musetalk_server.errors import WeightsError
    from musetalk_server.runtime import choose_engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cluster = Settings(_env_file=None, result_dir=tmp_path, model_dir=tmp_path / "empty", engine="auto",
                       avatar_source="kubernetes")
    with pytest.raises(WeightsError, match=r"MUSETALK_ENGINE=auto but weights are missing under .*models\.download=true"
                                           r".*MUSETALK_ENGINE=lite.*: musetalkV15/unet\.pth"):
        choose_engine(cluster)
    # Local mode keeps its fallback, and lite by name is a choice, not a surprise.
    assert choose_engine(cluster.model_copy(update={"avatar_source": "local"})).name == "lite"
    assert choose_engine(cluster.model_copy(update={"engine": "lite"})).name == "lite"


async def test_the_sweeper_leaves_the_uploads_avatars_still_read(k8s: Any, job_volume: Path) -> None:
    """A kept upload waits as long as its Avatar: for a GPU an hour away, for a later spec edit.
    The temp sweeper once removed it after MUSETALK_TEMP_TTL_S like any leftover, and the Job then
    found no video. An old file no Avatar names still goes."""
    import os
    import time

    uploads = job_volume / "uploads"
    uploads.mkdir()
    for name in ("waiting-0a1b2c3d.mp4", "by-hand.mp4", "leftover.mp4"):
        (uploads / name).write_bytes(b"video")
        hour_ago = time.time() - 3600
        os.utime(uploads / name, (hour_ago, hour_ago))
    made_by_rest = {"apiVersion": "musetalk.io/v1", "kind": "Avatar",
                    "metadata": {"name": "waiting", "annotations": {"musetalk.io/upload": "uploads/waiting-0a1b2c3d.mp4"}},
                    "spec": {"videoPath": "uploads/waiting-0a1b2c3d.mp4", "engine": "lite"}}
    made_by_hand = {"apiVersion": "musetalk.io/v1", "kind": "Avatar", "metadata": {"name": "by-hand"},
                    "spec": {"videoPath": "./uploads/by-hand.mp4", "engine": "lite"}}
    for body in (made_by_rest, made_by_hand):
        assert (await k8s.post(AVATARS_URL, json=body)).status in (200, 201)
    settings = settings_for(job_volume).model_copy(update={"temp_ttl_s": 60.0})

    def serve_until_swept() -> None:  # its first sweep, at start-up; off the loop, which serves the API
        with LiveServer(create_app(settings, engine=FakeEngine())):
            deadline = time.monotonic() + 20
            while (uploads / "leftover.mp4").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    await asyncio.to_thread(serve_until_swept)
    assert sorted(p.name for p in uploads.iterdir()) == ["by-hand.mp4", "waiting-0a1b2c3d.mp4"]


def test_an_avatar_being_deleted_is_gone_from_the_listing_and_the_show(tmp_path: Path) -> None:
    """While its finalizer runs (a pod stopping: up to two minutes), an Avatar with a
    deletionTimestamp was shown Ready by GET /avatars/{id}, while streams of it answered 404."""
    from musetalk_server.avatars.service import ClusterAvatars
    from musetalk_server.errors import AvatarNotFound

    class Resources:
        def __init__(self) -> None:
            self.items = [{"metadata": {"name": "leaving", "deletionTimestamp": "2026-12-07T10:00:00Z"},
                           "status": {"phase": "Ready", "message": "Avatar processed successfully"}},
                          {"metadata": {"name": "staying"}, "status": {"phase": "Pending", "message": "waiting"}}]

        def list(self) -> list[dict[str, Any]]:
            return self.items

        def get(self, name: str) -> dict[str, Any] | None:
            return next((i for i in self.items if i["metadata"]["name"] == name), None)

    avatars = ClusterAvatars(AvatarStore(tmp_path / "avatars"), Resources(), volume=tmp_path,  # type: ignore[arg-type]
                             engine="lite", fps=25.0, timeout_s=1, recheck_s=1)
    assert [(e.avatar_id, e.phase) for e in avatars.list()] == [("staying", "Pending")]
    assert avatars.get("staying").message == "waiting"
    with pytest.raises(AvatarNotFound):
        avatars.get("leaving")
