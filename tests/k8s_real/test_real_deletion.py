"""Deleting an Avatar on the real server: the finalizer stops the Job, waits (boundedly) for its
pods, removes the files, and lets the Avatar go."""

from __future__ import annotations

import json
from pathlib import Path

from k8s_real_helpers import Cluster, Operator, eventually


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

    wait_s = int(operator.env["MUSETALK_OPERATOR_CLEANUP_WAIT_S"])
    eventually(lambda: cluster.avatar_gone(ns, "erin"), timeout=wait_s + 20, what="the Avatar gone")
    assert not folder.exists()
    assert cluster.pods_of(ns, "avatar-erin-g1")[0]["metadata"]["name"] == pod  # still Terminating
    warning = [e for e in cluster.events(ns, "erin") if e["reason"] == "CleanupTimedOut"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning" and pod in warning[0]["message"]
    assert f"waiting for preprocessing pod(s) {pod} to stop" in warning[0]["message"]
    assert "avatar erin: gave up after" in operator.log()
