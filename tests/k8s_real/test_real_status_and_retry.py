"""Why an Avatar is not ready, on the real server: the scheduler's and the container's reasons reach
its status, an Event and `kubectl get avatars` (the server's own Table) within seconds; a Job that
then fails on its deadline keeps that reason; and a Failed Avatar is retried as the docs say."""

from __future__ import annotations

from typing import Any

from k8s_real_helpers import Cluster, Operator, eventually

SCHEDULER_SAYS = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
PULL_SAYS = 'Back-off pulling image "registry.example/musetalk-server:0.1.0"'
SHOWN_WITHIN_S = 5.0
RETRY = "operator.musetalk.io/retry"


def shown(cluster: Cluster, ns: str, name: str, reason: str, says: str,
          within: float = SHOWN_WITHIN_S) -> dict[str, Any]:
    """The reason in status, as an Event and in the printed columns, all within a few seconds."""
    def everywhere() -> dict[str, Any] | None:
        status = cluster.avatar(ns, name).get("status") or {}
        events = [e for e in cluster.events(ns, name) if e["reason"] == reason and says in e["message"]]
        row = cluster.table(ns).get(name) or {}
        if status.get("reason") == reason and says in status.get("message", "") and events \
                and row.get("Reason") == reason and says in row.get("Message", ""):
            return {"status": status, "event": events[-1], "row": row}
        return None
    return eventually(everywhere, timeout=within, what=f"{reason} shown on {name}")


def test_the_schedulers_reason_shows_on_the_avatar(cluster: Cluster, namespace: str, operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "gpu-hungry", videoPath="uploads/g.mp4", engine="musetalk")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-gpu-hungry-g1"), what="the pod")["metadata"]["name"]
    cluster.set_pod_unschedulable(ns, pod, SCHEDULER_SAYS)
    seen = shown(cluster, ns, "gpu-hungry", "Unschedulable", SCHEDULER_SAYS)
    assert seen["status"]["phase"] == "Pending" and seen["row"]["Phase"] == "Pending"
    assert seen["event"]["type"] == "Warning"  # a problem to act on, not progress
    assert seen["status"]["engine"] == "musetalk" and seen["row"]["Engine"] == "musetalk"


def test_an_image_pull_back_off_shows_on_the_avatar(cluster: Cluster, namespace: str, operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "no-image", videoPath="uploads/n.mp4", engine="lite")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-no-image-g1"), what="the pod")["metadata"]["name"]
    cluster.set_container_waiting(ns, pod, "ImagePullBackOff", PULL_SAYS)
    seen = shown(cluster, ns, "no-image", "ImagePullBackOff", PULL_SAYS)
    assert seen["status"]["message"].startswith("container preprocess is waiting: ImagePullBackOff")


def test_the_reason_outlives_the_deadline_and_a_retry_makes_a_new_job(cluster: Cluster, namespace: str,
                                                                     operator: Operator) -> None:
    ns = namespace
    cluster.create_avatar(ns, "stuck", videoPath="uploads/s.mp4", engine="musetalk")
    pod = eventually(lambda: cluster.one_pod(ns, "avatar-stuck-g1"), what="the pod")["metadata"]["name"]
    cluster.set_pod_unschedulable(ns, pod, SCHEDULER_SAYS)
    shown(cluster, ns, "stuck", "Unschedulable", SCHEDULER_SAYS)

    # The deadline passes (shortened here): the real Job controller fails the Job and deletes its
    # pod, and with it the scheduler's verdict. The Avatar still says why.
    cluster.patch_job(ns, "avatar-stuck-g1", {"activeDeadlineSeconds": 1})
    eventually(lambda: cluster.phase(ns, "stuck") == "Failed", timeout=30, what="Failed")
    status = cluster.avatar(ns, "stuck")["status"]
    assert status["reason"] == "DeadlineExceeded"
    assert "the pod never started: Unschedulable: " in status["message"] and SCHEDULER_SAYS in status["message"]
    row = cluster.table(ns)["stuck"]
    assert row["Reason"] == "DeadlineExceeded" and SCHEDULER_SAYS in row["Message"]

    # Retry as docs/kubernetes.md says: a new value of the annotation.
    cluster.annotate_avatar(ns, "stuck", {RETRY: "1"})
    retried = eventually(lambda: [j for j in cluster.job_names(ns) if j.startswith("avatar-stuck-g1-r")],
                         what="the retry's Job")
    eventually(lambda: cluster.job_names(ns) == retried, what="the failed Job removed")
    eventually(lambda: cluster.phase(ns, "stuck") == "Pending", what="Pending again")
    assert cluster.avatar(ns, "stuck")["status"]["jobName"] == retried[0]
    assert cluster.avatar(ns, "stuck")["metadata"]["generation"] == 1  # the spec did not change
    # The same value again is no new request; another value is.
    cluster.annotate_avatar(ns, "stuck", {RETRY: "1", "unrelated": "x"})
    assert cluster.job_names(ns) == retried
    assert "JobCreated" in cluster.event_reasons(ns, "stuck")


def test_a_pod_the_api_server_refuses_shows_on_the_avatar(cluster: Cluster, namespace: str,
                                                          operator: Operator) -> None:
    # A namespace's ResourceQuota (as a shared cluster sets one) refuses the Job's pod. The Job's
    # status never changes; the Job controller's FailedCreate Event is the one record, and it once
    # left the Avatar saying "waiting for the preprocessing pod to start" for ever.
    ns = namespace
    cluster.core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}, _preload_content=False)
    cluster.create_avatar(ns, "over-quota", videoPath="uploads/q.mp4", engine="lite")
    eventually(lambda: cluster.job_names(ns) == ["avatar-over-quota-g1"], what="the Job")
    # The operator reads the Job again every PENDING_RECHECK_S (15 s) while the Avatar is Pending.
    seen = shown(cluster, ns, "over-quota", "FailedCreate", "exceeded quota: no-pods", within=40)
    assert seen["status"]["phase"] == "Pending" and seen["event"]["type"] == "Warning"
    assert seen["status"]["message"].startswith("the Job cannot create the preprocessing pod: Error creating: pods ")
    assert cluster.pods_of(ns, "avatar-over-quota-g1") == []
    # Quota lifted: the Job controller's next try makes the pod, and the Avatar says so.
    cluster.core.delete_namespaced_resource_quota("no-pods", ns, _preload_content=False)
    eventually(lambda: cluster.pods_of(ns, "avatar-over-quota-g1"), timeout=90, what="the pod, once allowed")
    eventually(lambda: cluster.avatar(ns, "over-quota")["status"]["reason"] == "JobPending", what="JobPending again")
    # A Pending Avatar has the recheck timer running: its deletion must not wait on it (Kopf's default
    # 60 s poll for a timer caught mid-run once held a deleted Avatar past a 20 s wait).
    cluster.delete_avatar(ns, "over-quota")
    eventually(lambda: cluster.avatar_gone(ns, "over-quota"), timeout=10, what="the Avatar gone")

    assert "Timer 'recheck_pending" not in operator.log()  # Kopf's line per recheck is dropped
