"""Job (and its pods) -> Avatar status. Pure functions; the Job watcher is their only caller.

Phases: Pending (Job exists, no pod running yet, e.g. waiting for a GPU node), Running,
Ready (the CLI committed the avatar), Failed (the Job gave up; the message says why).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .jobs import CONTAINER

__all__ = ["Outcome", "avatar_status", "job_outcome", "pod_result", "pod_running", "reason_name"]

PENDING, RUNNING, READY, FAILED = "Pending", "Running", "Ready", "Failed"
MAX_MESSAGE = 4000  # the CRD caps status.message at 4096 characters


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
    failed = status.get("failed") or 0
    if failed:
        return Outcome(PENDING, "JobRetrying", f"attempt {failed} failed; retrying")
    return Outcome(PENDING, "JobPending", "waiting for the preprocessing pod to start")


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


def refine(outcome: Outcome, result: dict[str, Any] | None) -> tuple[Outcome, int | None]:
    """Fold the container's own report into the outcome; returns it with the frame count."""
    if result is None:
        return outcome, None
    report = result["json"] or {}
    if outcome.phase == READY:
        frames = (report.get("info") or {}).get("frames")
        message = report.get("message") or outcome.message
        return Outcome(READY, outcome.reason, message), int(frames) if frames is not None else None
    if outcome.phase == FAILED:
        if report.get("detail"):
            code = report.get("code") or "preprocess_failed"
            return Outcome(FAILED, reason_name(code), f"{code}: {report['detail']}"), None
        # No JSON: the container died on its own (OOMKilled, a crash); say so with the log tail.
        container = result["reason"] or f"exit code {result['exitCode']}"
        tail = result["raw"].strip()
        message = f"{container}: {tail}" if tail else f"{container} ({outcome.message})"
        return Outcome(FAILED, reason_name(result["reason"]) if result["reason"] else outcome.reason, message), None
    return outcome, None


def avatar_status(
    outcome: Outcome,
    *,
    generation: int,
    job_name: str,
    frames: int | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The full status to publish. Keeps lastTransitionTime when the Ready condition holds still."""
    ready = {READY: "True", FAILED: "False"}.get(outcome.phase, "Unknown")
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    since = old["lastTransitionTime"] if old and old.get("status") == ready and old.get("lastTransitionTime") else now
    message = outcome.message[:MAX_MESSAGE]
    status: dict[str, Any] = {
        "phase": outcome.phase,
        "message": message,
        "observedGeneration": generation,
        # None, not "": no Job (an invalid spec). A 1.20 apiserver turns "" in a merge patch into
        # null and then refuses it as not a string (found on the real server in tests/k8s_real).
        "jobName": job_name or None,
        "frames": frames,  # None clears a stale count from an earlier generation (merge patch)
        "conditions": [{
            "type": "Ready", "status": ready, "reason": outcome.reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation,
        }],
    }
    return status
