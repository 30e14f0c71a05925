"""Deleting an Avatar on the real server: the finalizer stops the Job, waits (boundedly) for its
pods, removes the files, and lets the Avatar go. Every Avatar, whatever its name or state, goes
within seconds (no kubelet involved): nothing the user can apply is undeletable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from k8s_real_helpers import Cluster, Operator, eventually

# A pod's first failure fails its Job: a Failed Avatar without the controller's 10 s back-off.
CHART_VALUES = {"preprocess": {"backoffLimit": 0}}
GONE_WITHIN_S = 5.0  # "a few seconds"
NO_FACE = json.dumps({"detail": "no face found in the first 40 frames", "code": "no_face_detected"})


def write_avatar(volume: Path, name: str, frames: int) -> Path:
    """What the Job's CLI would have committed onto the volume."""
    folder = volume / "avatars" / name
    (folder / "frames").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"avatar_id": name, "frames": frames}))
    return folder


def test_delete_stops_the_job_and_removes_the_files(cluster: Cluster, namespace: str, operator: Operator,
                                                    volume: Path) -> None:
    ns = namespace
    cluster.create_avatar(ns, "dora", videoPath="uploads/dora.mp4", engine="lite")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-dora-g1"), what="the pod")["metadata"]["name"]
    folder = write_avatar(volume, "dora", 10)
    cluster.delete_avatar(ns, "dora")
    eventually(lambda: cluster.avatar_gone(ns, "dora"), what="the Avatar gone")
    assert cluster.job_names(ns) == [] and not folder.exists()
    eventually(lambda: cluster.pods_of(ns, "avatar-dora-g1") == [], what=f"{pod} collected")
    assert "CleanupTimedOut" not in cluster.event_reasons(ns, "dora")


def test_a_pod_stuck_terminating_holds_deletion_only_for_a_bounded_wait(cluster: Cluster, namespace: str,
                                                                       operator: Operator, volume: Path) -> None:
    ns = namespace
    cluster.create_avatar(ns, "erin", videoPath="uploads/erin.mp4", engine="lite")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-erin-g1"), what="the pod")["metadata"]["name"]
    cluster.bind_to_lost_node(ns, pod)  # scheduled onto a node whose kubelet never answers
    cluster.set_pod_running(ns, pod)
    eventually(lambda: cluster.phase(ns, "erin") == "Running")
    folder = write_avatar(volume, "erin", 10)

    cluster.delete_avatar(ns, "erin")
    # The Job goes; its pod is marked for deletion and stays Terminating: no kubelet confirms.
    eventually(lambda: cluster.pods_of(ns, "avatar-erin-g1")[0]["metadata"].get("deletionTimestamp"),
               what="the pod Terminating")
    assert cluster.avatar(ns, "erin")["metadata"]["deletionTimestamp"]
    assert folder.exists()  # the finalizer waits first: a live pod could still commit files
    # The columns say so while `kubectl delete` hangs, not "Running ... preprocessing".
    saying = eventually(lambda: cluster.avatar(ns, "erin")["status"]["message"], what="a message")
    eventually(lambda: cluster.avatar(ns, "erin")["status"]["message"].startswith(
        f"deleting: waiting for preprocessing pod(s) {pod} to stop (at most "), what=f"the wait said, not {saying!r}")

    wait_s = int(operator.env["MUSETALK_OPERATOR_CLEANUP_WAIT_S"])
    eventually(lambda: cluster.avatar_gone(ns, "erin"), timeout=wait_s + 20, what="the Avatar gone")
    assert not folder.exists()
    assert cluster.pods_of(ns, "avatar-erin-g1")[0]["metadata"]["name"] == pod  # still Terminating
    warning = [e for e in cluster.events(ns, "erin") if e["reason"] == "CleanupTimedOut"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning" and pod in warning[0]["message"]
    assert f"waiting for preprocessing pod(s) {pod} to stop" in warning[0]["message"]
    assert "avatar erin: gave up after" in operator.log()
    # The wait is normal: Kopf's retries of it are INFO lines, not an ERROR every few seconds.
    waits = [line for line in operator.log().splitlines() if "failed temporarily: waiting for" in line]
    assert waits and not [line for line in waits if " ERROR " in line], waits


def delete_and_time(cluster: Cluster, ns: str, name: str) -> float:
    start = time.monotonic()
    cluster.delete_avatar(ns, name)
    eventually(lambda: cluster.avatar_gone(ns, name), timeout=GONE_WITHIN_S * 4, what=f"{name} gone")
    return time.monotonic() - start


# 1.20-1.24 have no CEL, so the API admits any DNS subdomain: a dot, or up to 253 characters.
@pytest.mark.parametrize("name", ["news.anchor", "x" * 70], ids=["dotted", "70-characters"])
def test_an_avatar_whose_name_is_no_avatar_id_fails_and_is_still_deletable(cluster: Cluster, namespace: str,
                                                                          operator: Operator, name: str) -> None:
    ns = namespace
    cluster.create_avatar(ns, name, videoPath="uploads/x.mp4", engine="lite")
    eventually(lambda: cluster.phase(ns, name) == "Failed", what="Failed")
    status = cluster.avatar(ns, name)["status"]
    assert status["reason"] == "InvalidSpec" and "must be a DNS label" in status["message"]
    assert "musetalk.io/cleanup" in cluster.avatar(ns, name)["metadata"]["finalizers"]
    assert delete_and_time(cluster, ns, name) < GONE_WITHIN_S
    assert cluster.job_names(ns) == []
    assert "Traceback" not in operator.log(), operator.log()[-3000:]


def test_a_failed_and_a_pending_avatar_are_deleted_within_seconds(cluster: Cluster, namespace: str,
                                                                 operator: Operator, volume: Path) -> None:
    ns = namespace
    cluster.create_avatar(ns, "broken", videoPath="uploads/broken.mp4", engine="lite")
    cluster.create_avatar(ns, "waiting", videoPath="uploads/waiting.mp4", engine="lite")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-broken-g1"), what="broken's pod")["metadata"]["name"]
    cluster.finish_pod(ns, pod, exit_code=2, message=NO_FACE)
    eventually(lambda: cluster.phase(ns, "broken") == "Failed", what="Failed")
    eventually(lambda: cluster.one_pod(ns, "avatar-waiting-g1"), what="waiting's pod (never scheduled)")
    eventually(lambda: cluster.phase(ns, "waiting") == "Pending", what="Pending")

    assert delete_and_time(cluster, ns, "broken") < GONE_WITHIN_S
    assert delete_and_time(cluster, ns, "waiting") < GONE_WITHIN_S
    assert cluster.job_names(ns) == []
