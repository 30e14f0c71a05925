"""Job status and pods -> Avatar status. Pure, no cluster."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from musetalk_operator import status

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "avatars.musetalk.io.yaml").read_text())
STATUS_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def pod(message: str, exit_code: int = 0, reason: str = "Completed", finished: str = "2030-01-01T00:00:00Z") -> dict:
    return {"status": {"containerStatuses": [{"name": "preprocess", "state": {"terminated": {
        "exitCode": exit_code, "reason": reason, "message": message, "finishedAt": finished}}}]}}


def test_phases_follow_the_job() -> None:
    assert status.job_outcome(None).phase == "Pending"
    assert status.job_outcome({"active": 1, "ready": 0}).phase == "Pending"  # scheduled, waiting for a GPU
    assert status.job_outcome({"active": 1, "ready": 1}).phase == "Running"
    # API servers without `ready` (before 1.24): `active` counts unscheduled pods too, so only a
    # pod in phase Running says Running.
    pending = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    running = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    leaving = {"metadata": {"name": "p", "deletionTimestamp": "2030-01-01T00:00:00Z"}, "status": {"phase": "Running"}}
    assert status.job_outcome({"active": 1}).phase == "Pending"
    assert status.job_outcome({"active": 1}, [pending]).phase == "Pending"
    assert status.job_outcome({"active": 1}, [pending, running]).phase == "Running"
    assert status.job_outcome({"active": 1}, [leaving]).phase == "Pending"
    assert status.job_outcome({"active": 1, "ready": 0}, [running]).phase == "Pending"  # `ready` wins where it exists
    assert status.job_outcome({"failed": 1}).reason == "JobRetrying"
    assert status.job_outcome({"conditions": [{"type": "Complete", "status": "True"}]}).phase == "Ready"
    failed = status.job_outcome({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                 "message": "Job was active longer than specified deadline"}]})
    assert (failed.phase, failed.reason) == ("Failed", "DeadlineExceeded")
    assert status.job_outcome({"conditions": [{"type": "Complete", "status": "False"}]}).phase == "Pending"


def test_ready_takes_frames_and_engine_from_the_termination_message() -> None:
    report = json.dumps({"message": "Avatar processed successfully", "avatar_id": "a",
                         "info": {"frames": 125, "engine": "lite"}})
    done = status.job_outcome({"conditions": [{"type": "Complete", "status": "True"}]})
    outcome, info = status.refine(done, status.pod_result([pod(report)]))
    assert (outcome.phase, outcome.message, info["frames"], info["engine"]) == (
        "Ready", "Avatar processed successfully", 125, "lite")


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}


def pending_pod(conditions: list | None = None, waiting: dict | None = None, deleting: bool = False) -> dict:
    statuses = [{"name": "preprocess", "state": {"waiting": waiting}}] if waiting else []
    meta = {"deletionTimestamp": "2030-01-01T00:00:00Z"} if deleting else {}
    return {"metadata": meta, "status": {"phase": "Pending", "conditions": conditions or [],
                                         "containerStatuses": statuses}}


def test_pending_says_what_the_scheduler_or_the_kubelet_says() -> None:
    unschedulable = status.job_outcome({"active": 1}, [pending_pod([UNSCHEDULABLE])])
    assert (unschedulable.phase, unschedulable.reason) == ("Pending", "Unschedulable")
    assert unschedulable.message.endswith("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    pull = status.job_outcome({"active": 1}, [pending_pod(waiting={"reason": "ImagePullBackOff",
                                                                  "message": "Back-off pulling image"})])
    assert pull.reason == "ImagePullBackOff" and "Back-off pulling image" in pull.message
    assert status.is_problem(unschedulable) and status.is_problem(pull)
    # Progress is no problem: a container being created, a pod being torn down.
    creating = pending_pod(waiting={"reason": "ContainerCreating"})
    assert status.job_outcome({"active": 1}, [creating]).reason == "JobPending"
    assert status.job_outcome({"active": 1}, [pending_pod([UNSCHEDULABLE], deleting=True)]).reason == "JobPending"
    assert not status.is_problem(status.job_outcome({"active": 1}, [creating]))


def test_a_job_with_no_pod_says_why_the_api_server_refused_it() -> None:
    quota = ('Error creating: pods "avatar-a-g1-x7k2p" is forbidden: exceeded quota: gpu-quota, '
             'requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4')
    events = [
        {"type": "Normal", "reason": "SuccessfulCreate", "message": "Created pod: x", "lastTimestamp": "2030-01-01T00:00:09Z"},
        {"type": "Warning", "reason": "FailedCreate", "message": "Error creating: an older refusal",
         "lastTimestamp": "2030-01-01T00:00:01Z"},
        {"type": "Warning", "reason": "FailedCreate", "message": quota, "lastTimestamp": "2030-01-01T00:00:05Z"},
    ]
    refused = status.creation_problem(events)
    assert refused == status.Outcome("Pending", "FailedCreate", f"the Job cannot create the preprocessing pod: {quota}")
    assert status.is_problem(refused)  # a Warning Event on the Avatar, and kept if the Job then fails
    # Newer servers time an Event by eventTime alone.
    newer = [{"type": "Warning", "reason": "FailedCreate", "message": "a", "eventTime": "2030-01-01T00:00:01.000000Z"},
             {"type": "Warning", "reason": "FailedCreate", "message": "b", "eventTime": "2030-01-01T00:00:02.000000Z"}]
    assert status.creation_problem(newer).message.endswith(": b")
    assert status.creation_problem(events[:1]) is None and status.creation_problem([]) is None


def test_a_deadline_keeps_the_reason_the_pod_gave_and_a_redelivery_keeps_it_too() -> None:
    stuck = status.avatar_status(status.job_outcome({"active": 1}, [pending_pod([UNSCHEDULABLE])]), generation=1,
                                 job_name="j", frames=None, previous=None, now="2030-01-01T00:00:00Z")
    # The pod is gone before the Job says Failed: no live pod, so the reason stays.
    gap = status.keep_cause(status.job_outcome({"active": 1}, []), stuck, "j", pod_alive=False)
    assert gap.reason == "Unschedulable"
    # But a pod that got scheduled and is being created clears it.
    assert status.keep_cause(status.job_outcome({"active": 1}, [pending_pod()]), stuck, "j").reason == "JobPending"
    deadline = status.job_outcome({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                   "message": "Job was active longer than specified deadline"}]})
    failed = status.keep_cause(deadline, stuck, "j")
    assert failed.reason == "DeadlineExceeded"
    assert failed.message == ("Job was active longer than specified deadline; the pod never started: Unschedulable: "
                              + stuck["message"])
    written = status.avatar_status(failed, generation=1, job_name="j", frames=None, previous=stuck, now="t")
    assert status.keep_cause(deadline, written, "j") == failed  # re-delivered: same message, nothing to write
    assert status.keep_cause(deadline, stuck, "another-job") == deadline  # a retry's Job starts afresh


def test_failure_reasons_the_cli_json_then_the_container_then_the_job() -> None:
    failed = status.job_outcome({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                 "message": "Job has reached the specified backoff limit"}]})
    cli = pod(json.dumps({"detail": "video has no frames", "code": "unsupported_media"}), 1, "Error")
    outcome, _ = status.refine(failed, status.pod_result([cli]))
    assert (outcome.reason, outcome.message) == ("UnsupportedMedia", "unsupported_media: video has no frames")

    oom = pod("", 137, "OOMKilled")
    outcome, _ = status.refine(failed, status.pod_result([oom]))
    assert outcome.reason == "OOMKilled" and outcome.message.startswith("OOMKilled")

    crash = pod("Traceback (most recent call last):\nImportError: libGL.so.1", 1, "Error")
    outcome, _ = status.refine(failed, status.pod_result([crash]))
    assert "ImportError: libGL.so.1" in outcome.message

    outcome, _ = status.refine(failed, None)  # pods already gone
    assert outcome.reason == "BackoffLimitExceeded"


def test_a_retry_says_why_the_attempt_before_it_failed() -> None:
    """It said only "attempt 1 failed; retrying" until the last attempt had failed too."""
    retrying = status.job_outcome({"failed": 1, "active": 1})
    first = pod(json.dumps({"detail": "no face found in the video", "code": "no_face_detected"}), 2, "Error")
    outcome, info = status.refine(retrying, status.pod_result([first, pending_pod()]))
    assert (outcome.phase, outcome.reason, info) == ("Pending", "JobRetrying", {})
    assert outcome.message == "attempt 1 failed; retrying (no_face_detected: no face found in the video)"
    oom, _ = status.refine(retrying, status.pod_result([pod("", 137, "OOMKilled")]))
    assert oom.message == "attempt 1 failed; retrying (OOMKilled)"


def test_the_newest_attempt_wins() -> None:
    old = pod(json.dumps({"detail": "first", "code": "a"}), 1, "Error", "2030-01-01T00:00:00Z")
    new = pod(json.dumps({"detail": "second", "code": "b"}), 1, "Error", "2030-01-01T00:05:00Z")
    assert status.pod_result([new, old])["json"]["detail"] == "second"


def test_status_fits_the_crd_and_keeps_transition_time() -> None:
    running = status.Outcome("Running", "JobRunning", "preprocessing")
    first = status.avatar_status(running, generation=2, job_name="j", frames=None, previous=None,
                                 now="2030-01-01T00:00:00Z")
    again = status.avatar_status(running, generation=2, job_name="j", frames=None, previous=first,
                                 now="2030-01-01T00:09:00Z")
    assert again == first  # a re-delivered event changes nothing, so nothing is written
    assert first["reason"] == "JobRunning" and first["engine"] is None
    ready = status.avatar_status(status.Outcome("Ready", "Preprocessed", "ok"), generation=2, job_name="j",
                                 frames=10, previous=first, now="2030-01-01T00:10:00Z")
    assert ready["conditions"][0]["lastTransitionTime"] == "2030-01-01T00:10:00Z"
    long = status.Outcome("Failed", "Error", "x" * 10_000)
    failed = status.avatar_status(long, generation=2, job_name="j", frames=None, previous=ready, now="2030-01-01T00:11:00Z")
    for doc in (first, ready, failed):
        jsonschema.validate({k: v for k, v in doc.items() if v is not None}, STATUS_SCHEMA,
                            format_checker=jsonschema.FormatChecker())


def test_reason_names_are_condition_identifiers() -> None:
    assert status.reason_name("no_face_detected") == "NoFaceDetected"
    assert status.reason_name("OOMKilled") == "OOMKilled"
    assert status.reason_name("_") == "Failed"


def test_a_failed_job_is_timed_as_a_succeeded_one_is() -> None:
    """Kubernetes sets completionTime on success only: failed Jobs, hour-long ones included, never
    reached musetalk_operator_job_seconds."""
    from musetalk_operator import metrics
    from musetalk_operator.handlers import count_finish

    def observed(outcome: str) -> tuple[float, float]:
        samples = {s.name: s.value for family in metrics.JOB_SECONDS.collect() for s in family.samples
                   if s.labels.get("outcome") == outcome}
        return samples.get("musetalk_operator_job_seconds_count", 0.0), samples.get("musetalk_operator_job_seconds_sum", 0.0)

    before = observed("failed"), observed("succeeded")
    count_finish(status.Outcome(status.FAILED, "DeadlineExceeded", "too slow"), {
        "startTime": "2026-12-07T10:00:00Z", "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-12-07T11:00:00Z"}]})
    count_finish(status.Outcome(status.READY, "Preprocessed", "ok"),
                 {"startTime": "2026-12-07T10:00:00Z", "completionTime": "2026-12-07T10:00:42Z"})
    (failed_n, failed_s), (ok_n, ok_s) = observed("failed"), observed("succeeded")
    assert (failed_n - before[0][0], failed_s - before[0][1]) == (1, 3600)
    assert (ok_n - before[1][0], ok_s - before[1][1]) == (1, 42)


def test_available_says_whether_any_generation_is_served_while_ready_is_this_ones() -> None:
    """A spec edit's Job: Ready went Unknown (then False if it failed) while the avatar before it was
    still served, and nothing in the status said so; `kubectl wait --for=condition=Available` now can."""
    def conditions(outcome: status.Outcome, serving: bool, previous: dict | None = None, now: str = "t1") -> dict:
        written = status.avatar_status(outcome, generation=2, job_name="j", frames=None, previous=previous,
                                       now=now, serving=serving)
        jsonschema.validate({k: v for k, v in written.items() if v is not None}, STATUS_SCHEMA)  # a merge patch drops None
        return {c["type"]: c for c in written["conditions"]}

    ready = status.Outcome(status.READY, "Preprocessed", "ok")
    editing = status.Outcome(status.PENDING, "JobRunning", "preprocessing")
    failed = status.Outcome(status.FAILED, "NoFaceDetected", "no_face_detected: no face")
    first = conditions(editing, serving=False)
    assert (first["Ready"]["status"], first["Available"]["status"], first["Available"]["reason"]) == (
        "Unknown", "False", "NotPreprocessed")
    served = conditions(ready, serving=True)
    assert (served["Ready"]["status"], served["Available"]["reason"]) == ("True", "Serving")
    edit = conditions(editing, serving=True, previous={"conditions": list(served.values())}, now="t2")
    assert (edit["Ready"]["status"], edit["Available"]["status"], edit["Available"]["reason"]) == (
        "Unknown", "True", "ServingEarlier")
    assert edit["Available"]["lastTransitionTime"] == "t1" and edit["Ready"]["lastTransitionTime"] == "t2"
    broken = conditions(failed, serving=True)
    assert broken["Ready"]["status"] == "False" and broken["Available"]["status"] == "True"
    assert broken["Available"]["message"] == "this generation failed; the last preprocessed video is still served"
