"""Inference: the live MJPEG stream and the MP4 download, two sinks over a render from the one entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from ...errors import OperationKind
from ...media.jpeg import MJPEG_MEDIA_TYPE
from ...media.mp4 import AUDIO_RATE
from ...render.request import SpeechRequest
from ...render.sinks.mjpeg import MjpegStream
from ...render.sinks.mp4 import render_mp4_file
from ..deps import AvatarIdPath, JobsDep, RenderingDep, StateDep, require_api_key
from ..openapi import JOB_ACCEPTED, MP4_RESPONSE, STREAM_RESPONSE, error_responses
from ..state import AppState
from ..uploads import saved_upload
from .jobs import accept

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)], responses=error_responses("keyed"))
_RENDER_KINDS: tuple[OperationKind, ...] = ("avatar", "upload", "device", "render")

AudioFile = Annotated[UploadFile, File(description="Audio in any format FFmpeg decodes (wav, mp3, m4a, ogg, flac)")]


def stream_headers(speech: SpeechRequest) -> dict[str, str]:
    return {
        "X-Frame-Rate": f"{speech.fps:g}",
        "X-Frame-Count": str(speech.frames),
        "X-Audio-Duration-Ms": f"{speech.duration_ms:.0f}",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # tell nginx-style ingresses not to buffer the stream
    }


def _audio(state: AppState, upload: UploadFile) -> AbstractAsyncContextManager[Path]:
    """The upload as a temporary file, held while the render entry decodes it."""
    s = state.settings
    return saved_upload(upload, s.result_dir / "uploads", s.max_upload_bytes)


@router.post("/inference/stream/{avatar_id}", response_class=StreamingResponse,
             responses={**STREAM_RESPONSE, **error_responses(*_RENDER_KINDS)})
async def stream(
    state: StateDep,
    rendering: RenderingDep,
    avatar_id: AvatarIdPath,
    audio_file: AudioFile,
    realtime: Annotated[bool, Query(description="Pace frames at the frame rate instead of as fast as possible")] = False,
) -> StreamingResponse:
    """MJPEG (multipart/x-mixed-replace): each part one JPEG with X-Frame-Index and X-Timestamp-Ms."""
    tracker = state.metrics.render("stream", state.engine_name)  # started now: TTFF counts the upload
    render = await rendering.open_async(avatar_id, "paced" if realtime else "unpaced", _audio(state, audio_file))
    s = state.settings
    sink = MjpegStream(render, pool=state.pool, ahead=state.pool_size, quality=s.jpeg_quality,
                       queue_frames=s.stream_queue_frames, paced=realtime, tracker=tracker)
    await sink.start()  # the sink owns the render now: a failure here closes both
    state.streams.add(sink)
    # The body's end closes the sink; the background task too, should the body never start.
    return StreamingResponse(_forget_when_done(state, sink), media_type=MJPEG_MEDIA_TYPE,
                             headers=stream_headers(render.speech), background=BackgroundTask(sink.close))


async def _forget_when_done(state: AppState, sink: MjpegStream) -> AsyncIterator[bytes]:
    try:
        async for part in sink.body():
            yield part
    finally:
        state.streams.discard(sink)


@router.post("/inference/batch/{avatar_id}", response_class=FileResponse,
             responses={**MP4_RESPONSE, **JOB_ACCEPTED, **error_responses(*_RENDER_KINDS, "async_batch")})
async def batch(
    request: Request, state: StateDep, rendering: RenderingDep, jobs: JobsDep, avatar_id: AvatarIdPath,
    audio_file: AudioFile,
    run_async: Annotated[bool, Query(alias="async", description="Answer 202 with a job id at once and render "
                                     "in the background (GET /jobs/{job_id})")] = False,
) -> Response:
    """An MP4: H.264 yuv420p with the uploaded audio as AAC, one frame per 1/fps of audio."""
    upload = _audio(state, audio_file)
    if run_async:  # the same checks; the job's worker admits the render when it starts (async_jobs.py)
        return await accept(jobs, await rendering.open_async(avatar_id, "unpaced", upload, mux_rate=AUDIO_RATE,
                                                             admit=False))
    tracker = state.metrics.render("batch", state.engine_name)
    with await rendering.open_async(avatar_id, "unpaced", upload, mux_rate=AUDIO_RATE) as render:
        out = await render_mp4_file(render, state.settings.result_dir / "outputs", audio_rate=AUDIO_RATE,
                                    tracker=tracker, gone=request.is_disconnected)
    return FileResponse(
        out, media_type="video/mp4", filename=f"{avatar_id}.mp4",
        headers=stream_headers(render.speech), background=BackgroundTask(out.unlink, missing_ok=True),
    )
