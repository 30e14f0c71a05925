"""The real operator (Kopf 1.45) against an emulated API server; the test plays the Job controller."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from operator_helpers import (
    AVATAR,
    AVATARS_URL,
    JOB,
    MERGE,
    NS,
    avatar_body,
    current,
    eventually,
    finish_pod,
    job_names,
    operator,
    result_json,
    set_job_status,
)

from musetalk_operator import handlers, metrics


def phase(k8s: Any, name: str) -> str | None:
    return (current(k8s, AVATAR, name).get("status") or {}).get("phase")


async def create(k8s: Any, body: dict[str, Any]) -> None:
    response = await k8s.post(AVATARS_URL, json=body)
    assert response.status in (200, 201), await response.text()


def write_avatar(volume: Path, name: str, frames: int) -> Path:
    """What the Job's CLI would have committed onto the volume."""
    folder = volume / "avatars" / name
    (folder / "frames").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"avatar_id": name, "frames": frames}))
    return folder


async def test_create_runs_a_job_and_reports_ready_then_delete_cleans_up(k8s: Any, volume: Path) -> None:
    started = metrics.JOBS_STARTED._value.get()
    async with operator() as runner:
        await create(k8s, avatar_body("alice", bboxShift=-3))
        job = await eventually(lambda: current(k8s, JOB, "avatar-alice-g1"))
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:4] == ["--avatar-id", "alice", "--video", "/data/uploads/alice.mp4"]
        assert "--bbox-shift" in container["args"] and "-3" in container["args"]
        owner = job["metadata"]["ownerReferences"][0]
        assert owner["uid"] == current(k8s, AVATAR, "alice")["metadata"]["uid"] and owner["controller"]

        await eventually(lambda: phase(k8s, "alice") == "Pending")
        await set_job_status(k8s, "avatar-alice-g1", {"active": 1, "ready": 1, "startTime": "2030-01-01T00:00:00Z"})
        await eventually(lambda: phase(k8s, "alice") == "Running")

        folder = write_avatar(volume, "alice", 125)
        await finish_pod(k8s, "avatar-alice-g1", "alice", exit_code=0, message=result_json(125))
        await set_job_status(k8s, "avatar-alice-g1", {
            "active": 0, "ready": 0, "succeeded": 1, "completionTime": "2030-01-01T00:01:00Z",
            "conditions": [{"type": "Complete", "status": "True"}]})
        await eventually(lambda: phase(k8s, "alice") == "Ready")
        status = current(k8s, AVATAR, "alice")["status"]
        assert status["frames"] == 125 and status["observedGeneration"] == 1
        assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["status"] == "True"
        assert (status["conditions"][1]["type"], status["conditions"][1]["status"]) == ("Available", "True")
        assert metrics.JOBS_STARTED._value.get() == started + 1

        response = await k8s.delete(f"{AVATARS_URL}/alice")
        assert response.status == 200
        await eventually(lambda: k8s.objects[AVATAR, NS, "alice"].deleted)
        assert await job_names(k8s) == []
        assert not folder.exists()
    assert runner.exception is None
    assert "avatar alice cleaned up (files removed: True)" in runner.output


async def test_failed_job_reports_the_containers_reason(k8s: Any) -> None:
    failed = metrics.JOBS_FAILED._value.get()
    async with operator() as runner:
        await create(k8s, avatar_body("bob"))
        await eventually(lambda: current(k8s, JOB, "avatar-bob-g1"))
        report = json.dumps({"detail": "no face found in the first 40 frames", "code": "no_face_detected"})
        await finish_pod(k8s, "avatar-bob-g1", "bob", exit_code=2, message=report)
        await set_job_status(k8s, "avatar-bob-g1", {"failed": 2, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]})
        await eventually(lambda: phase(k8s, "bob") == "Failed")
    status = current(k8s, AVATAR, "bob")["status"]
    assert status["message"] == "no_face_detected: no face found in the first 40 frames"
    assert status["conditions"][0]["reason"] == "NoFaceDetected"
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][1] | {"lastTransitionTime": None} == {  # nothing of bob's on the volume
        "type": "Available", "status": "False", "reason": "NotPreprocessed", "lastTransitionTime": None,
        "message": "no preprocessed video is on the volume yet", "observedGeneration": 1}
    assert metrics.JOBS_FAILED._value.get() == failed + 1
    assert runner.exception is None


async def test_spec_change_replaces_the_job(k8s: Any) -> None:
    async with operator() as runner:
        await create(k8s, avatar_body("carol"))
        await eventually(lambda: current(k8s, JOB, "avatar-carol-g1"))
        await set_job_status(k8s, "avatar-carol-g1", {"active": 1, "ready": 1})
        await eventually(lambda: phase(k8s, "carol") == "Running")

        response = await k8s.patch(f"{AVATARS_URL}/carol", json={"spec": {"bboxShift": 7}}, headers=MERGE)
        assert response.status == 200
        job = await eventually(lambda: current(k8s, JOB, "avatar-carol-g2"))
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][5] == "7"
        await eventually(lambda: k8s.objects[JOB, NS, "avatar-carol-g1"].deleted)
        await eventually(lambda: current(k8s, AVATAR, "carol")["status"]["observedGeneration"] == 2)
        assert phase(k8s, "carol") == "Pending"
        assert await job_names(k8s) == ["avatar-carol-g2"]
    assert runner.exception is None


async def test_unchanged_reapply_does_nothing(k8s: Any) -> None:
    async with operator() as runner:
        await create(k8s, avatar_body("dave"))
        await eventually(lambda: current(k8s, JOB, "avatar-dave-g1"))
        await finish_pod(k8s, "avatar-dave-g1", "dave", exit_code=0, message=result_json(40))
        await set_job_status(k8s, "avatar-dave-g1", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        await eventually(lambda: phase(k8s, "dave") == "Ready")
        await asyncio.sleep(0.3)  # let Kopf settle its own annotations
        before = len(list(k8s))
        ready = current(k8s, AVATAR, "dave")["status"]

        # What `kubectl apply` of the same file sends: the same spec and a last-applied annotation.
        same = avatar_body("dave")
        reapply = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(same)}},
                   "spec": same["spec"]}
        response = await k8s.patch(f"{AVATARS_URL}/dave", json=reapply, headers=MERGE)
        assert response.status == 200
        await asyncio.sleep(1.0)  # a negative check: give the operator time to (wrongly) react
        writes = [r for r in list(k8s)[before + 1:] if str(r.method) not in ("GET", "method.GET")]
    assert [str(r.url.path) for r in writes] == []
    assert current(k8s, AVATAR, "dave")["status"] == ready
    assert await job_names(k8s) == ["avatar-dave-g1"]
    assert runner.exception is None


async def test_restart_while_the_job_runs_picks_up_where_it_left(k8s: Any, volume: Path) -> None:
    async with operator() as first:
        await create(k8s, avatar_body("erin"))
        await eventually(lambda: current(k8s, JOB, "avatar-erin-g1"))
        await set_job_status(k8s, "avatar-erin-g1", {"active": 1, "ready": 1})
        await eventually(lambda: phase(k8s, "erin") == "Running")
    assert first.exception is None

    # The Job finishes while no operator runs; its pod is already gone (frames come from the volume).
    write_avatar(volume, "erin", 77)
    await set_job_status(k8s, "avatar-erin-g1", {"active": 0, "succeeded": 1,
                                                 "conditions": [{"type": "Complete", "status": "True"}]})
    started = metrics.JOBS_STARTED._value.get()
    async with operator() as second:
        await eventually(lambda: phase(k8s, "erin") == "Ready")
    assert current(k8s, AVATAR, "erin")["status"]["frames"] == 77
    assert await job_names(k8s) == ["avatar-erin-g1"]
    assert metrics.JOBS_STARTED._value.get() == started  # no second Job for the same generation
    assert second.exception is None


async def test_delete_waits_for_a_running_pod_before_removing_files(k8s: Any, volume: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(handlers, "POD_WAIT_S", 0.1)
    async with operator() as runner:
        await create(k8s, avatar_body("fay"))
        await eventually(lambda: current(k8s, JOB, "avatar-fay-g1"))
        folder = write_avatar(volume, "fay", 10)
        staging = volume / "avatars" / ".staging" / "fay.0123abcd"
        staging.mkdir(parents=True)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "avatar-fay-g1-x1", "namespace": NS,
                            "labels": {"job-name": "avatar-fay-g1", "musetalk.io/avatar": "fay"}},
               "spec": {"containers": [{"name": "preprocess", "image": "i"}]}, "status": {"phase": "Running"}}
        await k8s.post(f"/api/v1/namespaces/{NS}/pods", json=pod)

        await k8s.delete(f"{AVATARS_URL}/fay")
        await eventually(lambda: k8s.objects[JOB, NS, "avatar-fay-g1"].deleted)
        await asyncio.sleep(0.5)
        assert current(k8s, AVATAR, "fay")["metadata"]["deletionTimestamp"]  # held by the finalizer
        assert folder.exists()

        # The pod is killed (the Job is gone); now the finalizer may clean up.
        await k8s.patch(f"/api/v1/namespaces/{NS}/pods/avatar-fay-g1-x1/status",
                        json={"status": {"phase": "Failed"}}, headers=MERGE)
        await eventually(lambda: k8s.objects[AVATAR, NS, "fay"].deleted)
        assert not folder.exists() and not staging.exists()
    assert runner.exception is None
