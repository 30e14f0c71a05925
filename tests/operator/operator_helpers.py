"""Helpers for the operator tests: the operator in a thread, polling, and playing the Job controller."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kopf.testing import KopfRunner

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "avatars.musetalk.io.yaml"
NS = "default"
AVATAR = "musetalk.io/v1/avatars"
JOB = "batch/v1/jobs"
AVATARS_URL = f"/apis/musetalk.io/v1/namespaces/{NS}/avatars"
JOBS_URL = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS_URL = f"/api/v1/namespaces/{NS}/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
OPERATOR_ARGS = ["run", "--standalone", f"--namespace={NS}", "--verbose", "-m", "musetalk_operator.handlers"]


@contextlib.asynccontextmanager
async def operator() -> AsyncIterator[KopfRunner]:
    """KopfRunner in its thread; its blocking exit runs off the loop that serves kmock."""
    runner = KopfRunner(OPERATOR_ARGS, timeout=20)
    runner.__enter__()
    try:
        yield runner
    except BaseException as e:
        await asyncio.to_thread(runner.__exit__, type(e), e, e.__traceback__)
        raise
    else:
        await asyncio.to_thread(runner.__exit__, None, None, None)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll without blocking the loop (kmock must keep serving). Returns the first truthy value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (KeyError, ValueError, IndexError, TypeError) as e:
            last = e
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")


def current(k8s: Any, resource: str, name: str) -> dict[str, Any]:
    """The live object, or KeyError if absent or deleted."""
    obj = k8s.objects[resource, NS, name]
    if obj.deleted:
        raise KeyError(name)
    return obj.raw


async def job_names(k8s: Any) -> list[str]:
    """The Jobs that exist now, as a client would list them."""
    response = await k8s.get(JOBS_URL)
    return sorted(item["metadata"]["name"] for item in (await response.json())["items"])


def avatar_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "musetalk.io/v1", "kind": "Avatar",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"videoPath": f"uploads/{name}.mp4", "bboxShift": 0, "engine": "lite", **spec}}


async def set_job_status(k8s: Any, job: str, status: dict[str, Any]) -> None:
    """Play the Job controller."""
    response = await k8s.patch(f"{JOBS_URL}/{job}/status", json={"status": status}, headers=MERGE)
    assert response.status == 200, await response.text()


async def finish_pod(k8s: Any, job: str, avatar: str, *, exit_code: int, message: str,
                     reason: str | None = None) -> None:
    """Play the kubelet: a terminated preprocessing pod carrying the termination message."""
    terminated = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                  "message": message, "finishedAt": "2030-01-01T00:00:00Z"}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{job}-x1", "namespace": NS,
                        "labels": {"job-name": job, "musetalk.io/avatar": avatar}},
           "spec": {"containers": [{"name": "preprocess", "image": "musetalk-server:test"}]},
           "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                      "containerStatuses": [{"name": "preprocess", "state": {"terminated": terminated}}]}}
    response = await k8s.post(PODS_URL, json=pod)
    assert response.status in (200, 201), await response.text()


def result_json(frames: int) -> str:
    return json.dumps({"message": "Avatar processed successfully", "avatar_id": "x",
                       "info": {"frames": frames, "fps": 25.0}})
