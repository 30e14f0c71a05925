"""The operator as a process, with the chart's ServiceAccount token, against the real apiserver and
Job controller. The test plays only the kubelet (Pod status); the Jobs, their Pods, the back-off
and garbage collection are the real controllers'."""

from __future__ import annotations

import json
import time

from k8s_real_helpers import Cluster, Operator, eventually

REPORT = json.dumps({"message": "Avatar processed successfully", "avatar_id": "x", "info": {"frames": 77, "fps": 25.0}})
NO_FACE = json.dumps({"detail": "no face found in the first 40 frames", "code": "no_face_detected"})
# The Job controller's first retry waits 10 s on 1.20, then a second failure ends the Job.
BACKOFF_TIMEOUT_S = 60.0
STILL_S = 1.5  # how long an unscheduled pod is watched for a wrong Running


def no_forbidden(operator: Operator) -> None:
    log = operator.log()
    assert "Forbidden" not in log and "(403)" not in log, log[-3000:]  # an ApiException reads "(403)"


def test_an_avatar_becomes_a_job_then_ready_with_an_event_per_step(cluster: Cluster, namespace: str,
                                                                    operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "anchor", videoPath="uploads/anchor.mp4", engine="lite", bboxShift=-3)
    job = eventually(lambda: cluster.job(ns, "avatar-anchor-g1"), what="the Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    data_dir = operator.env["MUSETALK_OPERATOR_JOB_DATA_DIR"]
    assert args[:4] == ["--avatar-id", "anchor", "--video", f"{data_dir}/uploads/anchor.mp4"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Avatar"

    # The real Job controller made one pod; nothing schedules it. 1.20 Jobs have no status.ready,
    # and `active` counts this pod: the Avatar must still say Pending, not Running.
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-anchor-g1"), what="the Job's pod")
    assert "nodeName" not in pod["spec"]
    eventually(lambda: cluster.job(ns, "avatar-anchor-g1").get("status", {}).get("active") == 1)
    assert "ready" not in cluster.job(ns, "avatar-anchor-g1")["status"]
    eventually(lambda: cluster.phase(ns, "anchor") == "Pending", what="Pending")
    deadline = time.monotonic() + STILL_S  # the old code said Running within a second here
    while time.monotonic() < deadline:
        assert cluster.phase(ns, "anchor") == "Pending"
        time.sleep(0.1)

    name = pod["metadata"]["name"]
    cluster.set_pod_running(ns, name)
    eventually(lambda: cluster.phase(ns, "anchor") == "Running", what="Running after the pod runs")
    cluster.finish_pod(ns, name, exit_code=0, message=REPORT)
    eventually(lambda: cluster.phase(ns, "anchor") == "Ready", what="Ready")
    status = cluster.avatar(ns, "anchor")["status"]
    assert status["frames"] == 77 and status["observedGeneration"] == 1 and status["jobName"] == "avatar-anchor-g1"
    assert status["conditions"][0]["status"] == "True" and status["conditions"][0]["reason"] == "Preprocessed"
    assert cluster.job(ns, "avatar-anchor-g1")["status"]["succeeded"] == 1  # the controller completed the Job

    reasons = eventually(lambda: (r := cluster.event_reasons(ns, "anchor")) and r[-1] == "Preprocessed" and r,
                         what="the Preprocessed event")
    # The Job watcher may report Pending before `launch` has recorded the Job's creation.
    assert sorted(reasons[:2]) == ["JobCreated", "JobPending"] and reasons[2:] == ["JobRunning", "Preprocessed"]
    assert {e["type"] for e in cluster.events(ns, "anchor")} == {"Normal"}
    no_forbidden(operator)


def test_failures_are_retried_by_the_job_controller_then_reported(cluster: Cluster, namespace: str,
                                                                  operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "wall", videoPath="uploads/wall.mp4", engine="lite")
    first = eventually(lambda: cluster.one_pod(ns, "avatar-wall-g1"), what="the first pod")["metadata"]["name"]
    cluster.finish_pod(ns, first, exit_code=2, message=NO_FACE)
    eventually(lambda: cluster.avatar(ns, "wall")["status"]["conditions"][0]["reason"] == "JobRetrying",
               what="Pending while the Job retries")
    assert cluster.phase(ns, "wall") == "Pending"

    # backoffLimit 1 (the chart's preprocess.backoffLimit): the controller's retry fails too.
    second = eventually(lambda: cluster.one_pod(ns, "avatar-wall-g1", exclude=(first,)),
                        timeout=BACKOFF_TIMEOUT_S, what="the retry pod")["metadata"]["name"]
    cluster.finish_pod(ns, second, exit_code=2, message=NO_FACE)
    eventually(lambda: cluster.phase(ns, "wall") == "Failed", what="Failed")
    failed = {c["type"]: c for c in cluster.job(ns, "avatar-wall-g1")["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded"
    status = cluster.avatar(ns, "wall")["status"]
    assert status["message"] == "no_face_detected: no face found in the first 40 frames"
    assert status["conditions"][0] | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "False", "reason": "NoFaceDetected", "message": status["message"],
        "lastTransitionTime": None, "observedGeneration": 1}
    warning = eventually(lambda: [e for e in cluster.events(ns, "wall") if e["type"] == "Warning"], what="a Warning")
    assert [(e["reason"], e["message"]) for e in warning] == [("NoFaceDetected", f"Failed: {status['message']}")]
    no_forbidden(operator)


def test_a_spec_change_makes_a_new_job_and_removes_the_old(cluster: Cluster, namespace: str,
                                                           operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "carol", videoPath="uploads/carol.mp4", engine="lite")
    old_pod = eventually(lambda: cluster.one_pod(ns, "avatar-carol-g1"), what="g1's pod")["metadata"]["name"]
    cluster.patch_avatar_spec(ns, "carol", {"bboxShift": 7})
    job = eventually(lambda: cluster.job(ns, "avatar-carol-g2"), what="the g2 Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][5] == "7"
    eventually(lambda: cluster.job_names(ns) == ["avatar-carol-g2"], what="g1 deleted")
    # Garbage collection (the real controller) takes g1's pod with it.
    eventually(lambda: old_pod not in [p["metadata"]["name"] for p in cluster.pods_of(ns, "avatar-carol-g1")],
               what="g1's pod collected")
    eventually(lambda: cluster.avatar(ns, "carol")["status"]["observedGeneration"] == 2)
    assert cluster.avatar(ns, "carol")["status"]["jobName"] == "avatar-carol-g2"
    reasons = eventually(lambda: (r := cluster.event_reasons(ns, "carol")).count("JobCreated") == 2 and r)
    assert "JobSuperseded" in reasons
    no_forbidden(operator)


def test_a_name_only_the_cel_rule_would_refuse_fails_in_the_operator(cluster: Cluster, namespace: str,
                                                                    operator: Operator) -> None:
    # 1.20 has no CEL, so the API admits a dotted name the rule refuses; the operator must not.
    cluster.create_avatar(namespace, "not.a.label", videoPath="uploads/x.mp4", engine="lite")
    eventually(lambda: cluster.phase(namespace, "not.a.label") == "Failed", what="Failed")
    status = cluster.avatar(namespace, "not.a.label")["status"]
    assert status["conditions"][0]["reason"] == "InvalidSpec" and "DNS label" in status["message"]
    assert cluster.job_names(namespace) == []
    assert eventually(lambda: cluster.event_reasons(namespace, "not.a.label")) == ["InvalidSpec"]
    cluster.delete_avatar(namespace, "not.a.label")  # and it can be deleted (it once could not)
    eventually(lambda: cluster.avatar_gone(namespace, "not.a.label"), timeout=10, what="the Avatar gone")


def test_a_job_the_api_server_refuses_fails_the_avatar_until_the_spec_is_fixed(cluster: Cluster, namespace: str,
                                                                              operator: Operator) -> None:
    # The CRD admits any quantities; the Job API refuses a request over the operator's 12Gi memory
    # limit. That once left the Avatar blank while the operator retried every minute.
    cluster.create_avatar(namespace, "greedy", videoPath="uploads/x.mp4", engine="lite",
                          resources={"requests": {"memory": "20Gi"}})
    eventually(lambda: cluster.phase(namespace, "greedy") == "Failed", what="Failed")
    status = cluster.avatar(namespace, "greedy")["status"]
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert status["message"].startswith("the API server refuses the preprocessing Job: ")
    assert "must be less than or equal to memory limit" in status["message"]
    assert cluster.job_names(namespace) == []
    assert eventually(lambda: cluster.event_reasons(namespace, "greedy")) == ["InvalidSpec"]
    # A fixed spec is a new generation: its Job comes at once, not at a retry a minute later.
    cluster.patch_avatar_spec(namespace, "greedy", {"resources": {"requests": {"memory": "8Gi"}}})
    eventually(lambda: cluster.job_names(namespace) == ["avatar-greedy-g2"], timeout=10, what="the g2 Job")
    no_forbidden(operator)
