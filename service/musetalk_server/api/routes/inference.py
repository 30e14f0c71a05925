"""Inference: the live MJPEG stream and the MP4 download, two sinks over one frame iterator."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ...avatars.cache import AvatarCache
from ...engines.base import LoadedAvatar, Renderer
from ...errors import AvatarNotFound, EngineError, InvalidInput, MuseTalkError
from ...media.audio import decode_audio
from ...media.jpeg import MJPEG_MEDIA_TYPE, closing_boundary, encode_jpeg, error_part, jpeg_part
from ...media.mp4 import AUDIO_RATE
from ...media.timeline import SAMPLE_RATE, frame_count
from ...pipeline import FrameStream, encode_ahead, render_mp4
from ..deps import AvatarIdPath, CacheDep, StateDep, require_api_key
from ..openapi import MP4_RESPONSE, STREAM_RESPONSE, errors
from ..state import AppState
from ..uploads import saved_upload

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)], responses=errors(401))
_RENDER_ERRORS = errors(404, 409, 413, 415, 422, 500, 503)
log = logging.getLogger(__name__)

AudioFile = Annotated[UploadFile, File(description="Audio in any format FFmpeg decodes (wav, mp3, m4a, ogg, flac)")]
_DISCONNECT_POLL_S = 0.25
RENDER_FAILED = "rendering failed; the server log has the details"


@dataclass(frozen=True)
class Job:
    avatar: LoadedAvatar
    renderer: Renderer
    audio: np.ndarray  # (S,) float32, 16 kHz mono
    frames: int
    fps: float


async def prepare_job(
    state: AppState, cache: AvatarCache, avatar_id: str, upload: UploadFile, *, mux_rate: int | None = None
) -> tuple[Job, np.ndarray | None]:
    """Every check that can fail happens here, before the first byte of the response."""
    if not state.store.exists(avatar_id):
        raise AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")
    settings = state.settings
    async with saved_upload(upload, settings.result_dir / "uploads", settings.max_upload_bytes) as path:
        audio = await run_in_threadpool(decode_audio, path, max_seconds=settings.max_audio_seconds)
        # The MP4's own track is decoded again at a high rate from the upload, not upsampled from 16 kHz.
        mux = await run_in_threadpool(decode_audio, path, rate=mux_rate) if mux_rate else None
    fps = settings.fps
    frames = frame_count(audio.size, fps)
    if frames == 0:
        raise InvalidInput(f"audio lasts {audio.size / SAMPLE_RATE * 1000:.0f} ms, shorter than one frame at {fps} fps")
    avatar, renderer = await run_in_threadpool(cache.get, avatar_id)
    state.metrics.avatars_loaded.set(len(state.loaded_avatars()))
    return Job(avatar, renderer, audio, frames, fps), mux


def stream_headers(job: Job) -> dict[str, str]:
    return {
        "X-Frame-Rate": f"{job.fps:g}",
        "X-Frame-Count": str(job.frames),
        "X-Audio-Duration-Ms": f"{job.audio.size / SAMPLE_RATE * 1000:.0f}",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # tell nginx-style ingresses not to buffer the stream
    }


@router.post("/inference/stream/{avatar_id}", response_class=StreamingResponse,
             responses={**STREAM_RESPONSE, **_RENDER_ERRORS})
async def stream(
    request: Request,
    state: StateDep,
    cache: CacheDep,
    avatar_id: AvatarIdPath,
    audio_file: AudioFile,
    realtime: Annotated[bool, Query(description="Pace frames at the frame rate instead of as fast as possible")] = False,
) -> StreamingResponse:
    """MJPEG (multipart/x-mixed-replace): each part one JPEG with X-Frame-Index and X-Timestamp-Ms."""
    started = time.perf_counter()
    job, _ = await prepare_job(state, cache, avatar_id, audio_file)
    quality = state.settings.jpeg_quality

    def produce(cancel: threading.Event) -> Iterator[bytes]:
        frames = job.renderer.render(job.audio, job.fps, cancel)
        return encode_ahead(frames, lambda f: encode_jpeg(f, quality), state.pool, state.pool_size)

    frames = FrameStream(produce, maxsize=state.settings.stream_queue_frames, name=f"stream-{avatar_id}").start()
    parts = aiter(frames)
    try:
        first = await anext(parts)  # an engine failure before any byte still gets a status code
    except MuseTalkError:
        frames.close()
        raise
    except Exception as e:
        frames.close()
        log.exception("stream for %s failed before its first frame", avatar_id)
        raise EngineError(RENDER_FAILED) from e
    state.metrics.ttff.labels("stream").observe(time.perf_counter() - started)
    body = _mjpeg_body(state, job, frames, parts, first, realtime, started)
    return StreamingResponse(body, media_type=MJPEG_MEDIA_TYPE, headers=stream_headers(job))


async def _mjpeg_body(
    state: AppState, job: Job, frames: FrameStream[bytes], parts: AsyncIterator[bytes], first: bytes,
    realtime: bool, started: float,
) -> AsyncIterator[bytes]:
    engine = state.engine_name
    state.streams.add(frames)
    state.metrics.active_streams.inc()
    sent, clock = 0, time.perf_counter()
    try:
        jpeg: bytes | None = first
        while jpeg is not None:
            if realtime:
                await asyncio.sleep(max(0.0, clock + sent / job.fps - time.perf_counter()))
            yield jpeg_part(jpeg, sent, sent * 1000.0 / job.fps)
            sent += 1
            state.metrics.frames.labels(engine, "stream").inc()
            jpeg = await anext(parts, None)
        yield closing_boundary()
    except MuseTalkError as e:
        yield error_part(e.detail, e.code)
    except Exception:
        log.exception("stream for %s failed after %d frames", job.avatar.avatar_id, sent)
        yield error_part(f"rendering failed after {sent} of {job.frames} frames", "internal_error")
    finally:
        frames.close()  # on a client disconnect this is what stops the engine
        state.streams.discard(frames)
        state.metrics.active_streams.dec()
        elapsed = time.perf_counter() - started
        if sent and elapsed > 0:
            state.metrics.render_fps.labels("stream").observe(sent / elapsed)


@router.post("/inference/batch/{avatar_id}", response_class=FileResponse, responses={**MP4_RESPONSE, **_RENDER_ERRORS})
async def batch(
    request: Request, state: StateDep, cache: CacheDep, avatar_id: AvatarIdPath, audio_file: AudioFile
) -> FileResponse:
    """An MP4: H.264 yuv420p with the uploaded audio as AAC, one frame per 1/fps of audio."""
    started = time.perf_counter()
    job, mux = await prepare_job(state, cache, avatar_id, audio_file, mux_rate=AUDIO_RATE)
    assert mux is not None
    out_dir = state.settings.result_dir / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{avatar_id}-", suffix=".mp4", dir=out_dir)
    os.close(fd)  # PyAV opens the file by name
    out = Path(name)
    cancel = threading.Event()
    h, w = job.avatar.frames[0].shape[:2]
    state.metrics.active_streams.inc()
    try:
        render = run_in_threadpool(
            render_mp4, job.renderer, job.audio, job.fps, out,
            size=(w, h), mux_audio=mux, mux_rate=AUDIO_RATE, cancel=cancel,
        )
        written = await _until_done_or_gone(request, render, cancel)
    except MuseTalkError:
        out.unlink(missing_ok=True)
        raise
    except Exception as e:
        out.unlink(missing_ok=True)
        log.exception("batch for %s failed", avatar_id)
        raise EngineError(RENDER_FAILED) from e
    finally:
        state.metrics.active_streams.dec()
    elapsed = time.perf_counter() - started
    state.metrics.frames.labels(state.engine_name, "batch").inc(written)
    state.metrics.render_fps.labels("batch").observe(written / max(elapsed, 1e-9))
    return FileResponse(
        out, media_type="video/mp4", filename=f"{avatar_id}.mp4",
        headers=stream_headers(job), background=BackgroundTask(out.unlink, missing_ok=True),
    )


async def _until_done_or_gone(request: Request, work, cancel: threading.Event):
    """Await `work`; if the client hangs up meanwhile, tell the renderer to stop."""
    task = asyncio.ensure_future(work)
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
        if not done and await request.is_disconnected():
            cancel.set()
    return task.result()
