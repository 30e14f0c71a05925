"""Job (and its pods) -> Avatar status. Pure functions; the Job watcher is their only caller.

Phases: Pending (Job exists, no pod running yet, e.g. waiting for a GPU node), Running,
Ready (the CLI committed the avatar), Failed (the Job gave up; the message says why).
While Pending, the reason is the pod's own when it has one: the scheduler's (`Unschedulable`:
no GPU free, a taint, an unbound volume) or its container's waiting reason (`ImagePullBackOff`,
`CreateContainerConfigError`, ...); with no pod at all, the Job controller's own (`FailedCreate`:
a ResourceQuota, a PodSecurity or LimitRange refusal, a missing ServiceAccount). A Job that then
fails on its deadline keeps that cause in its message, since the pod that held it is gone by then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .jobs import CONTAINER

__all__ = ["Outcome", "avatar_status", "creation_problem", "is_problem", "job_outcome", "keep_cause", "pod_problem",
           "pod_result", "pod_running", "reason_name"]

PENDING, RUNNING, READY, FAILED = "Pending", "Running", "Ready", "Failed"
MAX_MESSAGE = 4000  # the CRD caps status.message at 4096 characters
JOB_PENDING, JOB_RETRYING = "JobPending", "JobRetrying"  # Pending for no reason the pod gives
FAILED_CREATE = "FailedCreate"  # the Job controller's Event reason when the API refuses its pod
# Container waiting reasons that are progress, not a problem to report.
STARTING = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class Outcome:
    phase: str
    reason: str
    message: str


def job_outcome(job_status: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]] = ()) -> Outcome:
    """Where a Job stands, from its status and, on servers without `status.ready`, its pods."""
    status = job_status or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in true:
        return Outcome(READY, "Preprocessed", "avatar preprocessed")
    if "Failed" in true:
        cond = true["Failed"]
        reason = cond.get("reason") or "JobFailed"
        return Outcome(FAILED, reason, cond.get("message") or reason)
    # `active` also counts pods still waiting to be scheduled. `ready` (1.24+) tells them apart;
    # older servers lack it, and then only a pod in phase Running says the work has started.
    active, ready = status.get("active") or 0, status.get("ready")
    running = ready > 0 if ready is not None else any(pod_running(p) for p in pods)
    if active and running:
        return Outcome(RUNNING, "JobRunning", "preprocessing")
    problem = pod_problem(pods)
    if problem is not None:
        return problem
    failed = status.get("failed") or 0
    if failed:
        return Outcome(PENDING, JOB_RETRYING, f"attempt {failed} failed; retrying")
    return Outcome(PENDING, JOB_PENDING, "waiting for the preprocessing pod to start")


def pod_problem(pods: Iterable[Mapping[str, Any]]) -> Outcome | None:
    """Why a live pod has not started: the scheduler's verdict, else a container's waiting reason."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if scheduled and scheduled.get("status") == "False":
            detail = scheduled.get("message") or "no node fits it"
            return Outcome(PENDING, scheduled.get("reason") or "Unschedulable",
                           f"the preprocessing pod cannot be scheduled: {detail}")
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason not in STARTING:
                detail = waiting.get("message") or reason
                return Outcome(PENDING, reason, f"container {cs.get('name')} is waiting: {reason}: {detail}")
    return None


def creation_problem(events: Iterable[Mapping[str, Any]]) -> Outcome | None:
    """Why a Job has no pod, from the Job controller's newest `FailedCreate` Warning: the API server
    refused the pod it made (a quota, a PodSecurity or LimitRange rule, a missing ServiceAccount).
    Such a Job's status never changes, so nothing else would ever say so."""
    refused = [e for e in events if e.get("type") == "Warning" and e.get("reason") == FAILED_CREATE]
    if not refused:
        return None
    newest = max(refused, key=_event_time)
    detail = str(newest.get("message") or "no reason given")
    return Outcome(PENDING, FAILED_CREATE, f"the Job cannot create the preprocessing pod: {detail}")


def _event_time(event: Mapping[str, Any]) -> str:
    # RFC 3339 UTC strings: they sort as times. Older servers set lastTimestamp, newer eventTime.
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def is_problem(outcome: Outcome) -> bool:
    """Pending for a reason someone must act on (the pod's, not the Job's own progress)."""
    return outcome.phase == PENDING and outcome.reason not in (JOB_PENDING, JOB_RETRYING)


def keep_cause(outcome: Outcome, previous: Mapping[str, Any] | None, job_name: str, *,
               pod_alive: bool = True) -> Outcome:
    """A Job that failed (its deadline, typically) while its pod was stuck keeps the pod's reason.

    The Job controller deletes the pod at the deadline, and with it the only record of why it
    never started; the Avatar's own last status still has it. So does the moment between the pod's
    deletion and the Job's Failed condition (`pod_alive` False: no live pod to go by).
    """
    before = previous or {}
    if before.get("jobName") != job_name:
        return outcome
    reason, message = str(before.get("reason") or ""), str(before.get("message") or "")
    stuck_before = before.get("phase") == PENDING and bool(reason) and is_problem(Outcome(PENDING, reason, message))
    if outcome.phase == PENDING and outcome.reason == JOB_PENDING and not pod_alive and stuck_before:
        return Outcome(PENDING, reason, message)
    if outcome.phase != FAILED:
        return outcome
    if before.get("phase") == FAILED and reason == outcome.reason and message.startswith(outcome.message):
        return Outcome(FAILED, outcome.reason, message)  # already said, with its cause: a re-delivery
    if stuck_before:
        return Outcome(FAILED, outcome.reason, f"{outcome.message}; the pod never started: {reason}: {message}")
    return outcome


def pod_running(pod: Mapping[str, Any]) -> bool:
    """A pod the kubelet has started (and that is not being torn down)."""
    return (pod.get("status") or {}).get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")


def pod_result(pods: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest terminated preprocessing container: its exit, reason and parsed JSON message."""
    finished = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == CONTAINER and term:
                finished.append((term.get("finishedAt") or "", pod, term))
    if not finished:
        return None
    _, _, term = max(finished, key=lambda item: item[0])
    raw = term.get("message") or ""
    try:
        parsed = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        parsed = None  # FallbackToLogsOnError: the log tail of a crash, not our JSON
    return {
        "exitCode": term.get("exitCode"),
        "reason": term.get("reason") or "",
        "json": parsed if isinstance(parsed, dict) else None,
        "raw": raw,
    }


def reason_name(code: str) -> str:
    """'no_face_detected' -> 'NoFaceDetected': condition reasons are CamelCase identifiers."""
    name = "".join(part[:1].upper() + part[1:] for part in code.replace("-", "_").split("_") if part)
    return name if name[:1].isalpha() else "Failed"


def refine(outcome: Outcome, result: dict[str, Any] | None) -> tuple[Outcome, dict[str, Any]]:
    """Fold the container's own report into the outcome; returns it with the report's `info`
    (frames, engine, ...) when the avatar is Ready, else an empty dict."""
    if result is None:
        return outcome, {}
    report = result["json"] or {}
    if outcome.phase == READY:
        message = report.get("message") or outcome.message
        return Outcome(READY, outcome.reason, message), dict(report.get("info") or {})
    if outcome.phase == FAILED:
        reason, message = _failure(report, result, context=outcome.message)
        return Outcome(FAILED, reason or outcome.reason, message), {}
    if outcome.reason == JOB_RETRYING:  # the attempt that failed says why, while the next one runs
        return Outcome(PENDING, JOB_RETRYING, f"{outcome.message} ({_failure(report, result)[1]})"), {}
    return outcome, {}


def _failure(report: Mapping[str, Any], result: Mapping[str, Any], context: str | None = None) -> tuple[str | None, str]:
    """The reason (None if it gives none) and message of a failed container: its JSON report,
    else how it died, with its log's tail, or `context` where it left none."""
    if report.get("detail"):
        code = report.get("code") or "preprocess_failed"
        return reason_name(code), f"{code}: {report['detail']}"
    # No JSON: the container died on its own (OOMKilled, a crash); say so with the log tail.
    container = result["reason"] or f"exit code {result['exitCode']}"
    tail = result["raw"].strip()
    message = f"{container}: {tail}" if tail else f"{container} ({context})" if context else container
    return (reason_name(result["reason"]) if result["reason"] else None), message


def avatar_status(
    outcome: Outcome,
    *,
    generation: int,
    job_name: str,
    frames: int | None,
    previous: Mapping[str, Any] | None,
    now: str,
    engine: str | None = None,
    serving: bool = False,
) -> dict[str, Any]:
    """The full status to publish. Keeps each condition's lastTransitionTime while it holds still.

    Ready is this generation's: Unknown while its Job runs, False if it failed. Available says
    whether the service can serve the avatar at all (`serving`: a preprocessed avatar is on the
    volume), which an earlier generation's is while a spec edit's Job runs, or after it failed."""
    ready = {READY: "True", FAILED: "False"}.get(outcome.phase, "Unknown")
    message = outcome.message[:MAX_MESSAGE]
    if not serving:
        available = ("False", "NotPreprocessed", "no preprocessed video is on the volume yet")
    elif outcome.phase == READY:
        available = ("True", "Serving", "served")
    elif outcome.phase == FAILED:
        available = ("True", "ServingEarlier", "this generation failed; the last preprocessed video is still served")
    else:
        available = ("True", "ServingEarlier", "the last preprocessed video is served until this generation's is Ready")
    earlier = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    conditions: list[dict[str, Any]] = []
    for kind, state, reason, says in (("Ready", ready, outcome.reason, message), ("Available", *available)):
        old = earlier.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == state else None
        conditions.append({"type": kind, "status": state, "reason": reason, "message": says,
                           "lastTransitionTime": since or now, "observedGeneration": generation})
    status: dict[str, Any] = {
        "phase": outcome.phase,
        "reason": outcome.reason,
        "message": message,
        "engine": engine,  # the engine that prepared (or will prepare) it; None while `auto` is unresolved
        "observedGeneration": generation,
        # None, not "": no Job (an invalid spec). A 1.20 apiserver turns "" in a merge patch into
        # null and then refuses it as not a string (found on the real server in tests/k8s_real).
        "jobName": job_name or None,
        "frames": frames,  # None clears a stale count from an earlier generation (merge patch)
        "conditions": conditions,
    }
    return status
