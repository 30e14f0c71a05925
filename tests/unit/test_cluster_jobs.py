"""The lease rules of cluster-mode jobs (render/cluster_jobs.py), over an in-memory stand-in for
the API server's RenderJob store that keeps its one promise: a write carrying an old
resourceVersion is refused. The real API server runs them in tests/k8s_real/test_real_replicas.py."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musetalk_server.errors import AvatarNotFound, JobFailed
from musetalk_server.render.async_jobs import JobState
from musetalk_server.render.cluster_jobs import ClusterJobs


class Store:
    """RenderJobs by name, with a resourceVersion bumped on every write."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.version = 0

    def put(self, name: str, spec: dict[str, Any], status: dict[str, Any]) -> None:
        self.version += 1
        self.items[name] = {"metadata": {"name": name, "resourceVersion": str(self.version)},
                            "spec": spec, "status": status}

    def create(self, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.put(name, spec, status)
        return copy.deepcopy(self.items[name])

    def get(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.items.get(name))

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(item) for item in self.items.values()]

    def update(self, resource: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        current = self.items.get(resource["metadata"]["name"])
        if current is None or current["metadata"]["resourceVersion"] != resource["metadata"]["resourceVersion"]:
            return None  # 404 or 409
        merged = {k: v for k, v in {**current["status"], **status}.items() if v is not None}
        self.put(current["metadata"]["name"], current["spec"], merged)
        return copy.deepcopy(self.items[current["metadata"]["name"]])

    def delete(self, name: str) -> None:
        self.items.pop(name, None)


class NoAvatars:
    def reopen(self, avatar_id: str, audio: Any, mux: Any) -> Any:
        raise AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")


def replica(store: Store, folder: Path, name: str, lease_s: float = 0.0) -> ClusterJobs:
    return ClusterJobs(folder, store, replica=name, heartbeat_s=1, lease_s=lease_s, attempts=3,  # type: ignore[arg-type]
                       rendering=NoAvatars, draining=lambda: False, ttl_s=60, workers=1, max_jobs=4,
                       audio_rate=48_000)


def orphan(store: Store, attempts: int, owner: str = "dead-pod") -> None:
    store.put("job1", {"avatarId": "anchor", "framesTotal": 10, "fps": 25.0},
              {"state": "running", "owner": owner, "attempts": attempts, "renewedAt": "2026-01-01T00:00:00+00:00",
               "framesDone": 4})


def settle(jobs: ClusterJobs) -> None:
    """Wait for the jobs held here to end (each leaves once its end is recorded)."""
    deadline = time.monotonic() + 5
    while jobs._jobs and time.monotonic() < deadline:
        time.sleep(0.01)


def test_of_two_replicas_taking_over_one_job_exactly_one_wins(tmp_path: Path) -> None:
    store = Store()
    orphan(store, attempts=1)
    np.savez(tmp_path / "job1.audio.npz", audio=np.zeros(16_000, np.float32), mux=np.zeros(0, np.float32))
    a, b = replica(store, tmp_path, "a"), replica(store, tmp_path, "b")
    stale = store.get("job1")
    assert stale is not None
    a._take_over(stale)
    b._take_over(stale)  # read before a's claim: its write carries the old resourceVersion
    settle(a)
    status = store.items["job1"]["status"]
    assert status["owner"] == "a" and status["attempts"] == 2 and status["message"] == "taken over from dead-pod"
    # a could not reopen it (the avatar is gone), so it failed with that reason, not a silent stall.
    assert status["state"] == "failed" and status["error"]["code"] == "avatar_not_found"
    assert a.get("job1").state.value == "failed" and b.get("job1").error == status["error"]


def test_a_job_whose_holders_all_went_silent_fails_with_job_lost(tmp_path: Path) -> None:
    store = Store()
    orphan(store, attempts=3)
    jobs = replica(store, tmp_path, "b")
    jobs.tend()  # first sight of this lease: the lease (0 s here) has run out at once
    status = store.items["job1"]["status"]
    assert status["state"] == "failed" and status["error"]["code"] == "job_lost"
    assert "3 replicas held it in turn" in status["error"]["detail"] and status["finishedAt"]
    view = jobs.get("job1")
    assert view.state.value == "failed" and view.finished_at is not None


def test_a_job_whose_audio_is_gone_fails_saying_so(tmp_path: Path) -> None:
    store = Store()
    orphan(store, attempts=1)
    jobs = replica(store, tmp_path, "b")
    jobs.tend()
    settle(jobs)
    error = store.items["job1"]["status"]["error"]
    assert error == {"detail": "job 'job1': its audio is no longer on the volume; submit it again",
                     "code": "internal_error"}


@pytest.mark.parametrize("owner, taken", [("", True), ("b", True), ("alive-pod", False)])
def test_a_lease_that_still_runs_is_left_alone(tmp_path: Path, owner: str, taken: bool) -> None:
    """Handed back (no owner) or held on paper by this replica's own name (it restarted): taken at
    once; another's lease is taken only when it has not changed for the lease."""
    store = Store()
    orphan(store, attempts=1, owner=owner)
    jobs = replica(store, tmp_path, "b", lease_s=60)
    jobs.tend()
    assert (store.items["job1"]["status"]["owner"] == "b") is taken
    assert store.items["job1"]["status"]["attempts"] == (2 if taken else 1)


def test_a_render_that_ends_while_its_lease_is_renewed_keeps_its_file(tmp_path: Path) -> None:
    """The heartbeat lists a running job, its render ends before the renewal is written: the
    renewal must not publish "done" itself (without the file's name), or the worker's own
    publish finds the job no longer held and removes the finished MP4 (a 500 on its result)."""
    store = Store()
    jobs = replica(store, tmp_path, "a", lease_s=60)
    job = jobs._held("job1", "anchor", 10, 25.0, attempt=1)
    job.state = JobState.RUNNING
    jobs._jobs["job1"] = job
    store.put("job1", {"avatarId": "anchor", "framesTotal": 10, "fps": 25.0}, jobs._holding(1, JobState.RUNNING))
    job.path.write_bytes(b"\0\0\0\x18ftypisom")
    reads = store.get

    def render_ends_meanwhile(name: str) -> dict[str, Any] | None:
        store.get = reads  # type: ignore[method-assign]
        resource = reads(name)  # read for the renewal, after the heartbeat listed the job...
        job.state = JobState.DONE  # ...and then the worker's last frame is written
        return resource

    store.get = render_ends_meanwhile  # type: ignore[method-assign]
    jobs.tend()
    jobs._finish(job, JobState.DONE)
    status = store.items["job1"]["status"]
    assert status["state"] == "done" and status["output"] == "job1-1.mp4"
    assert jobs.result("job1").path == job.path and job.path.is_file()


def test_a_done_job_whose_file_is_gone_answers_job_failed(tmp_path: Path) -> None:
    store = Store()
    store.put("job1", {"avatarId": "anchor", "framesTotal": 10, "fps": 25.0},
              {"state": "done", "output": "job1-1.mp4", "finishedAt": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(JobFailed, match="no longer on the volume"):
        replica(store, tmp_path, "a").result("job1")
