"""Async batch jobs: an MP4 rendered on a worker thread while the client polls for progress.

`POST /inference/batch/{id}?async=true` opens the render through the one entry exactly as the
synchronous endpoint does (every check before the answer, entry.py), but not yet admitted; it
hands it to `Jobs.submit` and answers 202. The job's worker admits it when it starts (a queued
job holds no device share) and ends it when the MP4 is written, failed or cancelled.
A job then goes queued -> running -> done | failed | cancelled:

- at most `workers` jobs render at once (MUSETALK_JOB_WORKERS), the others wait queued, and
  at most `max_jobs` are queued or running (each holds its decoded audio; MUSETALK_MAX_JOBS);
- progress is counted in frames, as `sinks/mp4.write_mp4` writes them;
- cancelling sets the render's cancel event, which the engine sees before its next frame;
- a finished job and its file are kept `ttl_s` (MUSETALK_JOB_TTL_S), then swept. Files in the
  folder that belong to no job here (a killed process's) go once they are that old too.

`Jobs` keeps them in this process's memory (local mode). In cluster mode `ClusterJobs`
(cluster_jobs.py) records them as RenderJob resources any replica reads, and renders them
with these same workers. Every method is blocking (locks, file removal); routes call them on
worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from ..disk.faults import disk_writes
from ..disk.sweeper import sweep_interval
from ..errors import JobFailed, JobNotFinished, JobNotFound, MuseTalkError, RenderError, TooManyJobs
from ..metrics import Metrics
from .entry import Render
from .sinks import RENDER_FAILED, as_render_error
from .sinks.mp4 import write_mp4

__all__ = ["JobState", "Job", "Jobs", "FINISHED", "expire_forever", "mp4_gone", "CANCEL_WAIT_S"]

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 2.0  # how long a cancel waits for the render to stop (it checks before every frame)
_ID_BYTES = 16  # 128 random bits: ids cannot be guessed, so a job is reachable only by who made it


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


@dataclass
class Job:
    """One async render as clients see it. The render itself is held only by its worker task."""

    job_id: str
    avatar_id: str
    frames_total: int
    fps: float
    path: Path  # the MP4, complete once the state is done
    created_at: float = field(default_factory=time.time)
    state: JobState = JobState.QUEUED
    frames_done: int = 0
    error: dict[str, str] | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    stopped: threading.Event = field(default_factory=threading.Event, repr=False)  # its worker is done
    future: Future | None = field(default=None, repr=False)

    def expires_at(self, ttl_s: float) -> float | None:
        return None if self.finished_at is None else self.finished_at + ttl_s

    def to_dict(self, ttl_s: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "avatar_id": self.avatar_id, "state": self.state.value,
            "progress": {"frames_done": self.frames_done, "frames_total": self.frames_total},
            "fps": self.fps, "error": self.error,
            "created_at": _iso(self.created_at), "finished_at": _iso(self.finished_at),
            "expires_at": _iso(self.expires_at(ttl_s)),
        }


class Jobs:
    """The registry of this process's async jobs, and the worker threads that render them."""

    def __init__(self, folder: Path, *, ttl_s: float, workers: int, max_jobs: int, audio_rate: int,
                 metrics: Metrics | None = None, engine_name: str = "") -> None:
        self.folder, self.ttl_s, self.max_jobs, self.audio_rate = Path(folder), ttl_s, max_jobs, audio_rate
        self.workers = workers
        self.metrics, self.engine_name = metrics, engine_name
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="job")
        if metrics is not None:
            for state in JobState:
                metrics.jobs.labels(state.value).set_function(partial(self.count, state))

    # -- the use cases -------------------------------------------------------------------------

    def submit(self, render: Render) -> Job:
        """Queue `render` (opened with the MP4's mux rate, not admitted). Raises TooManyJobs when full."""
        job = self._new_job(secrets.token_urlsafe(_ID_BYTES), render)
        self._enqueue(job, self._run, render)
        return job

    def _new_job(self, job_id: str, render: Render) -> Job:
        speech = render.speech
        return Job(job_id, render.avatar_id, speech.frames, speech.fps, self.folder / f"{job_id}.mp4")

    def _enqueue(self, job: Job, work: Callable[..., None], *args: Any) -> None:
        """Hold `job` and queue `work(job, *args)` on a worker; TooManyJobs when full."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._check_room()
            self._jobs[job.job_id] = job
            job.future = self._pool.submit(work, job, *args)

    def _check_room(self) -> None:
        """TooManyJobs when MUSETALK_MAX_JOBS are queued or running here. Hold the lock."""
        active = self._active()
        if active >= self.max_jobs:
            raise TooManyJobs(f"{active} jobs are queued or running (MUSETALK_MAX_JOBS={self.max_jobs}); "
                              "retry when one has finished")

    def _active(self) -> int:
        """Jobs queued or running here. Hold the lock."""
        return sum(1 for j in self._jobs.values() if j.state not in FINISHED)

    def get(self, job_id: str) -> Job:
        self.sweep()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id!r} does not exist (or it expired, or was deleted)")
        return job

    def result(self, job_id: str) -> Job:
        """The job, if its MP4 is complete; else JobNotFinished (queued, running) or JobFailed."""
        job = self.get(job_id)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            raise JobNotFinished(f"job {job_id!r} is {job.state.value}: "
                                 f"{job.frames_done} of {job.frames_total} frames; poll GET /jobs/{job_id}")
        if job.state is JobState.FAILED:
            raise JobFailed(f"job {job_id!r} failed: {(job.error or {}).get('detail', RENDER_FAILED)}")
        if job.state is JobState.CANCELLED:
            raise JobFailed(f"job {job_id!r} was cancelled")
        if not job.path.is_file():  # removed from the volume by hand, or by another replica's sweep
            raise mp4_gone(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job in flight (its render stops, its file goes), or discard a finished one."""
        job = self.get(job_id)
        if job.state in FINISHED:
            with self._lock:
                self._jobs.pop(job_id, None)
            job.path.unlink(missing_ok=True)
            return job
        job.cancel.set()
        if job.future is not None and job.future.cancel():  # still queued: it never runs
            self._finish(job, JobState.CANCELLED)
            job.stopped.set()
        if not job.stopped.wait(CANCEL_WAIT_S):
            log.warning("job %s did not stop within %.0f s of its cancel", job_id, CANCEL_WAIT_S)
        job.path.unlink(missing_ok=True)
        return job

    # -- housekeeping --------------------------------------------------------------------------

    def counts(self) -> dict[JobState, int]:
        with self._lock:
            states = [job.state for job in self._jobs.values()]
        return {state: states.count(state) for state in JobState}

    def count(self, state: JobState) -> int:
        return self.counts()[state]

    def sweep(self) -> int:
        """Forget finished jobs older than the TTL and remove their files, and stray old files."""
        now = time.time()
        with self._lock:
            expired = [job for job in self._jobs.values()
                       if job.finished_at is not None and job.finished_at + self.ttl_s <= now]
            for job in expired:
                del self._jobs[job.job_id]
            known = {job.path.name for job in self._jobs.values()}
        for job in expired:
            job.path.unlink(missing_ok=True)
        strays = 0
        if self.folder.is_dir():
            for path in self.folder.glob("*.mp4"):
                if path.name not in known and _older_than(path, now - self.ttl_s):
                    path.unlink(missing_ok=True)
                    strays += 1
        return len(expired) + strays

    def close(self) -> None:
        """At shutdown: stop every render and remove every file (nobody can fetch them any more)."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        self._stop_renders(jobs)
        for job in jobs:
            job.path.unlink(missing_ok=True)

    def _stop_renders(self, jobs: list[Job]) -> None:
        """Cancel `jobs`, drop the queued ones from the pool, and give each running one
        CANCEL_WAIT_S to stop (it checks before every frame)."""
        for job in jobs:
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for job in jobs:
            if job.future is not None and job.future.running():
                job.stopped.wait(CANCEL_WAIT_S)

    # -- the worker ----------------------------------------------------------------------------

    def _run(self, job: Job, render: Render) -> None:
        try:
            with self._lock:
                cancelled = job.cancel.is_set()  # cancelled just as it left the queue
                if not cancelled:
                    job.state = JobState.RUNNING
            if cancelled:
                self._finish(job, JobState.CANCELLED)
            else:
                self._render(job, render)
        finally:
            job.stopped.set()

    def _render(self, job: Job, render: Render) -> None:
        def progress(written: int) -> None:
            job.frames_done = written

        tracker = self.metrics.render("job", self.engine_name) if self.metrics else None
        try:
            # Admitted only now, so a queued job holds no device share; the `with` ends the render.
            with render.admit(), tracker or nullcontext(), disk_writes("the MP4"):  # a full disk is 507
                written = write_mp4(render, job.path, audio_rate=self.audio_rate, cancel=job.cancel,
                                    on_frame=progress)
                if tracker:
                    tracker.frames(written)
        except Exception as e:
            job.path.unlink(missing_ok=True)
            if job.cancel.is_set():  # what broke after a cancel (its file was removed) is the cancel
                self._finish(job, JobState.CANCELLED)
                return
            error = as_render_error(e, f"job {job.job_id} of {job.avatar_id}")
            body = error.body() if isinstance(error, MuseTalkError) else RenderError(RENDER_FAILED).body()
            self._finish(job, JobState.FAILED, body)
            return
        if job.cancel.is_set():
            job.path.unlink(missing_ok=True)
            self._finish(job, JobState.CANCELLED)
        else:
            self._finish(job, JobState.DONE)

    def _finish(self, job: Job, state: JobState, error: dict[str, str] | None = None) -> None:
        with self._lock:
            job.state, job.error, job.finished_at = state, error, time.time()
        log.info("job %s of %s %s after %d of %d frames", job.job_id, job.avatar_id, state.value,
                 job.frames_done, job.frames_total)


async def expire_forever(jobs: Jobs) -> None:
    """The app's task that expires jobs, on the temp sweeper's schedule (disk/sweeper.py)."""
    interval = sweep_interval(jobs.ttl_s)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(jobs.sweep)
        except OSError:
            log.exception("sweeping job files failed; trying again in %.1f s", interval)


def mp4_gone(job_id: str) -> JobFailed:
    """The answer for a done job whose MP4 is no longer there to send."""
    return JobFailed(f"job {job_id!r} is done but its MP4 is no longer on the volume; submit it again")


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
