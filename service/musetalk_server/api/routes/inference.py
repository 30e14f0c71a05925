"""Inference: the live MJPEG stream and the MP4 download, two sinks over one render job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ...media.jpeg import MJPEG_MEDIA_TYPE
from ...media.mp4 import AUDIO_RATE
from ...render.request import RenderJob
from ...render.sinks.mjpeg import MjpegStream
from ...render.sinks.mp4 import render_mp4_file
from ..deps import AvatarIdPath, JobsDep, RenderingDep, StateDep, require_api_key
from ..openapi import BATCH_WHEN, JOB_ACCEPTED, MP4_RESPONSE, STREAM_RESPONSE, errors
from ..uploads import saved_upload
from .jobs import accept

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)], responses=errors(401))
_RENDER_STATUSES = (404, 409, 413, 415, 422, 429, 500, 503, 507)
_RENDER_ERRORS = errors(*_RENDER_STATUSES)

AudioFile = Annotated[UploadFile, File(description="Audio in any format FFmpeg decodes (wav, mp3, m4a, ogg, flac)")]


def stream_headers(job: RenderJob) -> dict[str, str]:
    return {
        "X-Frame-Rate": f"{job.fps:g}",
        "X-Frame-Count": str(job.frames),
        "X-Audio-Duration-Ms": f"{job.duration_ms:.0f}",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # tell nginx-style ingresses not to buffer the stream
    }


async def _open_job(state, rendering, avatar_id: str, upload: UploadFile, kind: str | None,
                    mux_rate: int | None = None) -> RenderJob:
    """The job, admitted by the device scheduler as `kind` (429 busy or 503 not_ready if not).
    `kind` None: not admitted here (an async job is admitted when its worker starts it, jobs.py)."""
    settings = state.settings
    async with saved_upload(upload, settings.result_dir / "uploads", settings.max_upload_bytes) as path:
        job = await run_in_threadpool(rendering.open, avatar_id, path, mux_rate=mux_rate)
    if kind is None:
        return job
    ticket = await state.runtime.scheduler.admit_async(kind, fps=job.fps, frame_size=job.size,
                                                       engine=state.engine_name, frames=job.frames)
    return job.admitted(ticket)


@router.post("/inference/stream/{avatar_id}", response_class=StreamingResponse,
             responses={**STREAM_RESPONSE, **_RENDER_ERRORS})
async def stream(
    state: StateDep,
    rendering: RenderingDep,
    avatar_id: AvatarIdPath,
    audio_file: AudioFile,
    realtime: Annotated[bool, Query(description="Pace frames at the frame rate instead of as fast as possible")] = False,
) -> StreamingResponse:
    """MJPEG (multipart/x-mixed-replace): each part one JPEG with X-Frame-Index and X-Timestamp-Ms."""
    tracker = state.metrics.render("stream", state.engine_name)  # started now: TTFF counts the upload
    job = await _open_job(state, rendering, avatar_id, audio_file, "paced" if realtime else "unpaced")
    s = state.settings
    sink = MjpegStream(job, pool=state.pool, ahead=state.pool_size, quality=s.jpeg_quality,
                       queue_frames=s.stream_queue_frames, paced=realtime, tracker=tracker)
    await sink.start()  # a failure here closes the sink, which releases the ticket
    state.streams.add(sink)
    return StreamingResponse(_forget_when_done(state, sink), media_type=MJPEG_MEDIA_TYPE, headers=stream_headers(job))


async def _forget_when_done(state, sink: MjpegStream):
    try:
        async for part in sink.body():
            yield part
    finally:
        state.streams.discard(sink)


@router.post("/inference/batch/{avatar_id}", response_class=FileResponse,
             responses={**MP4_RESPONSE, **JOB_ACCEPTED, **errors(*_RENDER_STATUSES, when=BATCH_WHEN)})
async def batch(
    request: Request, state: StateDep, rendering: RenderingDep, jobs: JobsDep, avatar_id: AvatarIdPath,
    audio_file: AudioFile,
    run_async: Annotated[bool, Query(alias="async", description="Answer 202 with a job id at once and render "
                                     "in the background (GET /jobs/{job_id})")] = False,
) -> Response:
    """An MP4: H.264 yuv420p with the uploaded audio as AAC, one frame per 1/fps of audio."""
    if run_async:  # the same checks, then the render goes to the job queue (jobs.py)
        return await accept(jobs, await _open_job(state, rendering, avatar_id, audio_file, None, mux_rate=AUDIO_RATE))
    tracker = state.metrics.render("batch", state.engine_name)
    job = await _open_job(state, rendering, avatar_id, audio_file, "unpaced", mux_rate=AUDIO_RATE)
    out = await render_mp4_file(job, state.settings.result_dir / "outputs", audio_rate=AUDIO_RATE,
                                tracker=tracker, gone=request.is_disconnected)
    return FileResponse(
        out, media_type="video/mp4", filename=f"{avatar_id}.mp4",
        headers=stream_headers(job), background=BackgroundTask(out.unlink, missing_ok=True),
    )
