"""Async batch jobs: state and progress, the finished MP4, cancel. Thin: render/async_jobs.py does the work."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ...render.async_jobs import Job, Jobs, mp4_gone
from ...render.entry import Render
from ..deps import JobsDep, require_api_key
from ..models import Job as JobModel
from ..openapi import JOB_RESULT, error_responses

__all__ = ["router", "accept"]

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)], responses=error_responses("keyed"))

# Ids are secrets.token_urlsafe (render/async_jobs.py): anything else is refused as invalid_input, not looked up.
JobIdPath = Annotated[str, Path(description="The id from the 202 of POST /inference/batch/{avatar_id}?async=true",
                                pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def job_body(jobs: Jobs, job: Job) -> dict[str, Any]:
    status_url = f"/jobs/{job.job_id}"
    return job.to_dict(jobs.ttl_s) | {"status_url": status_url, "result_url": f"{status_url}/result"}


async def accept(jobs: Jobs, render: Render) -> JSONResponse:
    """Queue an opened (not yet admitted) render; 202 with where to poll."""
    job = await run_in_threadpool(jobs.submit, render)
    body = job_body(jobs, job)
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("/jobs/{job_id}", response_model=JobModel, responses=error_responses("job"))
async def show_job(jobs: JobsDep, job_id: JobIdPath) -> dict[str, Any]:
    """State (queued, running, done, failed, cancelled), progress in frames, and the error if failed."""
    return job_body(jobs, await run_in_threadpool(jobs.get, job_id))


class _JobFile(FileResponse):
    """The MP4, or 409 job_failed if it went between the job's check and this answer (a DELETE of
    the job meanwhile): Starlette finds it missing before it sends anything, and raises."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.path, media_type="video/mp4", filename=f"{job.avatar_id}.mp4",
                         headers={"X-Frame-Rate": f"{job.fps:g}", "X-Frame-Count": str(job.frames_total),
                                  "Cache-Control": "no-store"})
        self.job_id = job.job_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except RuntimeError:
            if os.path.exists(self.path):
                raise
            gone = mp4_gone(self.job_id)
            await JSONResponse(gone.body(), status_code=gone.status)(scope, receive, send)


@router.get("/jobs/{job_id}/result", response_class=FileResponse,
            responses={**JOB_RESULT, **error_responses("job", "job_result")})
async def job_result(jobs: JobsDep, job_id: JobIdPath) -> FileResponse:
    """The MP4 once the job is done (409 job_not_finished before, 409 job_failed if there is none)."""
    return _JobFile(await run_in_threadpool(jobs.result, job_id))


@router.delete("/jobs/{job_id}", response_model=JobModel, responses=error_responses("job"))
async def delete_job(jobs: JobsDep, job_id: JobIdPath) -> dict[str, Any]:
    """Cancel a job in flight (its render stops, its file goes) or discard a finished one."""
    return job_body(jobs, await run_in_threadpool(jobs.cancel, job_id))
