"""Async jobs in cluster mode: RenderJob resources every replica reads, rendered by the one that holds them.

Why resources and not Kubernetes Jobs: a job is seconds to minutes of work on a replica that
already holds the engine, the GPU and the avatar in memory. A batch/v1 Job would start a pod
that loads all three again (tens of seconds on a GPU) and needs a GPU of its own. A resource
costs one object in etcd, `kubectl get renderjobs` shows it, and the API server's optimistic
concurrency (resourceVersion) decides who holds it (docs/kubernetes.md, "Async jobs").

1. Submit: the accepting replica saves the decoded audio on the shared volume
   (`jobs/<id>.audio.npz`), creates the RenderJob with itself as `status.owner`, and renders
   it on its own workers (async_jobs.py) into `jobs/<id>-<attempt>.mp4`.
2. Any replica answers GET, result and DELETE from the resource; the MP4 is on the volume.
3. Lease: every `heartbeat_s` the owner renews `status.renewedAt` of each job it holds, with
   its progress. Every replica then lists the jobs; one whose renewal has not changed for
   `lease_s` (timed on the looker's own clock, so no two clocks need agree) is claimed by a
   replica with a free worker, with a write carrying the resourceVersion it read: one claim
   wins. The winner renders it again from frame 0, into its own file. After `attempts` holders
   it fails instead, with `job_lost`. An owner that cannot renew for `lease_s` stops its render.
4. A replica shutting down hands its jobs back (no owner); another claims them at its next look.
5. DELETE marks the job cancelled; its owner sees that at its next renewal and stops.
6. Finished jobs past the TTL go, resource and files, at whichever replica sweeps first.

So a job whose replica dies is held again within `lease_s + 2 * heartbeat_s` of its last renewal:
one heartbeat for a looker to see the last renewal, the lease, and one more until it looks again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..disk.faults import disk_writes
from ..errors import JobLost, JobNotFound, MuseTalkError, NotReady, RenderError
from .async_jobs import _ID_BYTES, CANCEL_WAIT_S, FINISHED, Job, Jobs, JobState, _iso, _older_than
from .entry import Render, RenderEntry
from .job_resources import JobResources
from .sinks import RENDER_FAILED, as_render_error

__all__ = ["ClusterJobs", "tend_forever"]

log = logging.getLogger(__name__)

_WRITE_TRIES = 5  # a status write that keeps losing to others' writes gives up after this many reads


class ClusterJobs(Jobs):
    """Async jobs recorded as RenderJob resources; this process renders those it holds."""

    def __init__(self, folder: Path, resources: JobResources, *, replica: str, heartbeat_s: float,
                 lease_s: float, attempts: int, rendering: Callable[[], RenderEntry],
                 draining: Callable[[], bool], **kw: Any) -> None:
        super().__init__(folder, **kw)
        self.resources, self.replica = resources, replica
        self.heartbeat_s, self.lease_s, self.attempts = heartbeat_s, lease_s, attempts
        self._rendering, self._draining = rendering, draining
        self._seen: dict[str, tuple[tuple[str, str], float]] = {}  # id -> ((owner, renewedAt), when it changed)
        self._renewed: dict[str, float] = {}  # id -> when this replica last renewed it
        self._submitting: set[str] = set()  # created here, not yet on a worker: not anyone's to claim
        self._closing = False

    # -- the use cases -------------------------------------------------------------------------

    def submit(self, render: Render) -> Job:
        job_id = secrets.token_hex(_ID_BYTES)  # a resource name: lowercase
        job = self._held(job_id, render.avatar_id, render.speech.frames, render.speech.fps, attempt=1)
        with self._lock:
            self._check_room()
            self._submitting.add(job_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with disk_writes("the job's audio"):
                np.savez(self._audio_path(job_id), audio=render.speech.audio,
                         mux=render.speech.mux if render.speech.mux is not None else np.zeros(0, np.float32))
            spec = {"avatarId": job.avatar_id, "framesTotal": job.frames_total, "fps": job.fps,
                    "createdAt": _iso(job.created_at)}
            self.resources.create(job_id, spec, self._holding(attempts=1, state=JobState.QUEUED))
            self._renewed[job_id] = time.monotonic()
            self._enqueue(job, self._run, render)
        except BaseException:
            self._discard(job_id)
            raise
        finally:
            self._submitting.discard(job_id)
        return job

    def get(self, job_id: str) -> Job:
        return self._view(self._resource(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job in flight wherever it renders (its owner stops within a heartbeat), or
        discard a finished one with its file."""
        resource = self._resource(job_id)
        for _ in range(_WRITE_TRIES):
            if _state(resource) in FINISHED:
                self._discard(job_id)
                return self._view(resource)
            ended = {"state": JobState.CANCELLED.value, "finishedAt": _iso(time.time())}
            if (cancelled := self.resources.update(resource, ended)) is not None:
                self._stop_here(job_id)
                self._audio_path(job_id).unlink(missing_ok=True)
                return self._view(cancelled)
            resource = self._resource(job_id)
        raise RenderError(f"job {job_id!r} kept changing while it was being cancelled; try again")

    # -- housekeeping --------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete finished jobs past the TTL (resource and file), and files no resource names."""
        now, gone = time.time(), 0
        resources = self.resources.list()
        for resource in resources:
            finished = _epoch((resource.get("status") or {}).get("finishedAt"))
            if _state(resource) in FINISHED and finished is not None and finished + self.ttl_s <= now:
                self._discard(resource["metadata"]["name"])
                gone += 1
        named = {r["metadata"]["name"] for r in resources} | self._submitting
        if self.folder.is_dir():
            for path in [*self.folder.glob("*.mp4"), *self.folder.glob("*.audio.npz")]:
                owner_id = path.name.split("-")[0].split(".")[0]
                if owner_id not in named and _older_than(path, now - self.ttl_s):
                    path.unlink(missing_ok=True)
                    gone += 1
        return gone

    def tend(self) -> None:
        """One heartbeat: renew the leases held here, then take over jobs whose lease ran out."""
        self._renew()
        if not self._draining() and not self._closing and self._can_render():
            self._look()

    def close(self) -> None:
        """At shutdown: stop every render here and hand its job back, for another replica to claim."""
        self._closing = True  # from now on a stopped job is handed back, not published as cancelled
        with self._lock:
            held = list(self._jobs.values())
        self._stop_renders(held)
        with self._lock:
            never_started = list(self._jobs.values())
        for job in never_started:
            self._hand_back(job)

    # -- renewing and taking over --------------------------------------------------------------

    def _renew(self) -> None:
        # Each job's state as it was when listed: a render that ends meanwhile is published by its
        # worker (_publish, with its file's name); a renewal writing "done" first would hide the file.
        with self._lock:
            held = [(job, job.state) for job in self._jobs.values() if job.state not in FINISHED]
        now = time.monotonic()
        for job, state in held:
            try:
                resource = self.resources.get(job.job_id)
                if not self._holds(resource):  # cancelled, deleted, or claimed by another
                    job.cancel.set()
                    continue
                assert resource is not None
                renewal = {"state": state.value, "framesDone": job.frames_done, "renewedAt": _iso(time.time())}
                if self.resources.update(resource, renewal) is not None:
                    self._renewed[job.job_id] = now
            except Exception:
                log.warning("could not renew job %s", job.job_id, exc_info=True)
            if now - self._renewed.get(job.job_id, now) >= self.lease_s:
                # Another replica may hold it by now: stop rather than render it twice.
                log.error("job %s: lease not renewed for %.0f s; stopping its render here", job.job_id, self.lease_s)
                job.cancel.set()

    def _look(self) -> None:
        now, listed = time.monotonic(), self.resources.list()
        for resource in listed:
            job_id, status = resource["metadata"]["name"], resource.get("status") or {}
            with self._lock:
                here = job_id in self._jobs or job_id in self._submitting
            if here or _state(resource) in FINISHED:
                continue
            lease = (status.get("owner") or "", status.get("renewedAt") or "")
            if self._seen.get(job_id, (None, 0.0))[0] != lease:
                self._seen[job_id] = (lease, now)
            expired = now - self._seen[job_id][1] >= self.lease_s
            # No owner: handed back. Owned by this name but not here: this replica restarted.
            if (not lease[0] or lease[0] == self.replica or expired) and self._room():
                self._take_over(resource)
        names = {r["metadata"]["name"] for r in listed}
        self._seen = {k: v for k, v in self._seen.items() if k in names}

    def _can_render(self) -> bool:
        try:
            self._rendering()  # NotReady while the engine loads: take nothing over yet
        except NotReady:
            return False
        return True

    def _take_over(self, resource: dict[str, Any]) -> None:
        status = resource.get("status") or {}
        job_id, attempts = resource["metadata"]["name"], int(status.get("attempts") or 0)
        # Handed back (no holder): its message says by whom.
        previous = status.get("owner") or f"nobody ({status.get('message') or 'never held'})"
        if attempts >= self.attempts:
            lost = JobLost(f"job {job_id!r}: {attempts} replicas held it in turn and each stopped renewing its "
                           f"lease (the last: {previous}); submit it again")
            self.resources.update(resource, {"state": JobState.FAILED.value, "error": lost.body(),
                                             "finishedAt": _iso(time.time())})
            self._audio_path(job_id).unlink(missing_ok=True)
            log.warning("%s", lost.detail)
            return
        claim = self._holding(attempts + 1, JobState.QUEUED) | {"message": f"taken over from {previous}"}
        if (claimed := self.resources.update(resource, claim)) is None:
            return  # another replica claimed it first
        spec = claimed["spec"]
        job = self._held(job_id, spec["avatarId"], int(spec["framesTotal"]), float(spec["fps"]), attempts + 1)
        log.info("job %s taken over from %s (holder %d)", job_id, previous, attempts + 1)
        self._renewed[job_id] = time.monotonic()
        try:
            self._enqueue(job, self._run_taken_over)
        except (MuseTalkError, RuntimeError):  # full after all, or shutting down: hand it back for another
            self._hand_back(job)

    def _run_taken_over(self, job: Job) -> None:
        try:
            try:
                with np.load(self._audio_path(job.job_id)) as saved:
                    audio, mux = saved["audio"], saved["mux"]
            except FileNotFoundError as e:
                raise RenderError(f"job {job.job_id!r}: its audio is no longer on the volume; submit it again") from e
            render = self._rendering().reopen(job.avatar_id, audio, mux if mux.size else None)
        except Exception as e:  # the avatar went, the audio file is gone, the engine is not ready...
            error = as_render_error(e, f"job {job.job_id} of {job.avatar_id}")
            body = error.body() if isinstance(error, MuseTalkError) else RenderError(RENDER_FAILED).body()
            self._finish(job, JobState.FAILED, body)
            job.stopped.set()
            return
        self._run(job, render)

    # -- the end of a render here ----------------------------------------------------------------

    def _finish(self, job: Job, state: JobState, error: dict[str, str] | None = None) -> None:
        super()._finish(job, state, error)
        # NotReady is never the job's fault: this replica is draining (its renders revoked) or not ready.
        not_here = state is JobState.FAILED and (error or {}).get("code") == NotReady.code
        try:
            if self._closing or not_here:
                self._hand_back(job)
            else:
                self._publish(job)
        except Exception:
            log.exception("job %s: could not record its end (%s); its lease will run out", job.job_id, state.value)
        finally:
            with self._lock:
                self._jobs.pop(job.job_id, None)
            self._renewed.pop(job.job_id, None)

    def _publish(self, job: Job) -> None:
        """Record the end of a render here, unless the job is no longer this replica's."""
        ended = {"state": job.state.value, "framesDone": job.frames_done, "error": job.error,
                 "finishedAt": _iso(job.finished_at), "output": job.path.name}
        for _ in range(_WRITE_TRIES):
            resource = self.resources.get(job.job_id)
            if not self._holds(resource):
                job.path.unlink(missing_ok=True)  # cancelled or claimed elsewhere: this file is nobody's
                return
            assert resource is not None
            if job.state is JobState.CANCELLED:  # stopped here (its lease ran out), not by a client
                self._hand_back(job)
                return
            if self.resources.update(resource, ended) is not None:
                if job.state is not JobState.DONE:
                    job.path.unlink(missing_ok=True)
                self._audio_path(job.job_id).unlink(missing_ok=True)
                for earlier in self.folder.glob(f"{job.job_id}-*.mp4"):  # what lost holders left half-written
                    if earlier != job.path:
                        earlier.unlink(missing_ok=True)
                return
        raise RenderError(f"job {job.job_id} kept changing while its end was recorded")

    def _hand_back(self, job: Job) -> None:
        """Give a job held here back to the cluster: no owner, and the hand-back costs no attempt."""
        job.path.unlink(missing_ok=True)
        for _ in range(_WRITE_TRIES):
            resource = self.resources.get(job.job_id)
            if not self._holds(resource):
                break
            assert resource is not None
            attempts = max(0, int((resource.get("status") or {}).get("attempts") or 1) - 1)
            # No holder: the field goes (1.20's API server turns "" into null, which the schema refuses).
            back = {"owner": None, "state": JobState.QUEUED.value, "framesDone": 0, "attempts": attempts,
                    "message": f"handed back by {self.replica}, which was shutting down"}
            if self.resources.update(resource, back) is not None:
                log.info("job %s handed back for another replica", job.job_id)
                break
        with self._lock:
            self._jobs.pop(job.job_id, None)

    # -- pieces --------------------------------------------------------------------------------

    def _holds(self, resource: dict[str, Any] | None) -> bool:
        status = (resource or {}).get("status") or {}
        return resource is not None and status.get("owner") == self.replica and _state(resource) not in FINISHED

    def _holding(self, attempts: int, state: JobState) -> dict[str, Any]:
        return {"owner": self.replica, "attempts": attempts, "state": state.value, "framesDone": 0,
                "renewedAt": _iso(time.time()), "error": None, "output": None}

    def _held(self, job_id: str, avatar_id: str, frames: int, fps: float, attempt: int) -> Job:
        return Job(job_id, avatar_id, frames, fps, self.folder / f"{job_id}-{attempt}.mp4")

    def _room(self) -> bool:
        with self._lock:
            return self._active() < self.workers

    def _stop_here(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        job.cancel.set()
        if job.future is not None and job.future.cancel():  # still queued here: it never runs
            with self._lock:
                self._jobs.pop(job_id, None)
        elif not job.stopped.wait(CANCEL_WAIT_S):
            log.warning("job %s did not stop within %.0f s of its cancel", job_id, CANCEL_WAIT_S)

    def _resource(self, job_id: str) -> dict[str, Any]:
        resource = self.resources.get(job_id)
        if resource is None:
            raise JobNotFound(f"job {job_id!r} does not exist (or it expired, or was deleted)")
        return resource

    def _discard(self, job_id: str) -> None:
        """The resource and every file of the job."""
        self.resources.delete(job_id)
        self._audio_path(job_id).unlink(missing_ok=True)
        for path in self.folder.glob(f"{job_id}-*.mp4"):
            path.unlink(missing_ok=True)

    def _audio_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.audio.npz"

    def _view(self, resource: dict[str, Any]) -> Job:
        """The job as clients see it, from its resource."""
        spec, status = resource["spec"], resource.get("status") or {}
        job_id = resource["metadata"]["name"]
        return Job(job_id, spec["avatarId"], int(spec["framesTotal"]), float(spec["fps"]),
                   self.folder / (status.get("output") or f"{job_id}.mp4"),
                   created_at=_epoch(spec.get("createdAt")) or 0.0, state=_state(resource),
                   frames_done=int(status.get("framesDone") or 0), error=status.get("error"),
                   finished_at=_epoch(status.get("finishedAt")))


async def tend_forever(jobs: ClusterJobs) -> None:
    """The app's task that renews this replica's leases and takes over lost jobs, every heartbeat."""
    while True:
        await asyncio.sleep(jobs.heartbeat_s)
        try:
            await asyncio.to_thread(jobs.tend)
        except Exception:
            log.exception("tending the cluster's jobs failed; trying again in %.1f s", jobs.heartbeat_s)


def _state(resource: dict[str, Any]) -> JobState:
    return JobState((resource.get("status") or {}).get("state") or JobState.QUEUED.value)


def _epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso).astimezone(UTC).timestamp()

