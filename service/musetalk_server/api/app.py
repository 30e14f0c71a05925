"""The app factory. Models load in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..avatars.service import ClusterAvatars
from ..config import Settings
from ..disk.sweeper import sweep_forever, sweep_temp
from ..engines.base import Engine
from ..media.mp4 import AUDIO_RATE
from ..metrics import Metrics
from ..render.async_jobs import Jobs, expire_forever
from ..render.cluster_jobs import ClusterJobs, tend_forever
from ..render.job_resources import JobResources
from ..runtime import EngineChoice, Runtime
from ..webrtc.live import WebRtc
from .errors import UnhandledErrorMiddleware, install_error_handlers
from .middleware import BodyLimitMiddleware, ReplicaHeaderMiddleware, RequestMetricsMiddleware
from .openapi import DESCRIPTION
from .routes import avatars, health, inference, jobs, preview, realtime, webrtc
from .state import AppState
from .web import install_cors, install_offline_docs, install_page

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the service. Pass `engine` to serve a ready-made one (tests, embedding)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        choice = EngineChoice(engine.name, str(engine.describe().get("device", "cpu"))) if engine else None
        runtime = Runtime.build(settings, choice=choice, metrics=metrics)
        runtime.store.ensure()
        # In local mode this process is the only writer, so any staging folder is a dead one.
        runtime.store.sweep(older_than_s=0 if settings.avatar_source == "local" else 6 * 3600)
        # Likewise uploads and outputs. On a shared volume other replicas' files wait for the TTL,
        # and the uploads Avatar resources still read stay: asking the API server which those are
        # is the sweeper's first round, in the background, so that start-up never waits on it.
        in_use = runtime.avatars.uploads_in_use if isinstance(runtime.avatars, ClusterAvatars) else None
        if in_use is None:
            sweep_temp(settings.result_dir, 0)
        sweeper = asyncio.create_task(sweep_forever(settings.result_dir, settings.temp_ttl_s, in_use,
                                                    at_once=in_use is not None))
        pool_size = max(2, os.cpu_count() or 2)
        state = AppState(runtime, metrics, ThreadPoolExecutor(pool_size, thread_name_prefix="encode"), pool_size,
                         WebRtc(settings, metrics))
        state.jobs = _jobs(settings, runtime, metrics)
        expirer = asyncio.create_task(expire_forever(state.jobs))
        tender = asyncio.create_task(tend_forever(state.jobs)) if isinstance(state.jobs, ClusterJobs) else None
        metrics.queue_depth.set_function(lambda: sum(s.frames.buffered for s in list(state.streams)))
        metrics.avatars_loaded.set_function(lambda: len(runtime.loaded_avatars()))
        app.state.musetalk = state
        loader = None
        if engine is not None:
            runtime.attach(engine)
        else:
            loader = asyncio.create_task(_load_engine(runtime))
        log.info("MuseTalk Server %s: engine %s on %s, avatars in %s", __version__, runtime.choice.name,
                 runtime.choice.device, runtime.store.root)
        try:
            yield
        finally:
            if loader:
                loader.cancel()
            sweeper.cancel()
            expirer.cancel()
            if tender:
                tender.cancel()
            await run_in_threadpool(state.jobs.close)
            await state.webrtc.close_all()
            for task in list(state.tasks):
                task.cancel()
            for stream in list(state.streams):
                stream.close()
            state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="MuseTalk Server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by install_offline_docs
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(UnhandledErrorMiddleware)  # innermost: a 500 still passes the metrics below
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    if settings.avatar_source == "kubernetes":
        app.add_middleware(ReplicaHeaderMiddleware, replica=settings.replica)
    install_cors(app, settings)
    for module in (health, avatars, preview, inference, jobs, realtime, webrtc):
        app.include_router(module.router)
    install_offline_docs(app)
    install_page(app)
    return app


def _jobs(settings: Settings, runtime: Runtime, metrics: Metrics) -> Jobs:
    """Async jobs in this process's memory, or (cluster mode) as RenderJob resources any replica reads."""
    folder = settings.result_dir / "jobs"
    common: dict[str, Any] = {
        "ttl_s": settings.job_ttl_s, "workers": settings.job_workers, "max_jobs": settings.max_jobs,
        "audio_rate": AUDIO_RATE, "metrics": metrics, "engine_name": runtime.choice.name}
    if settings.avatar_source != "kubernetes":
        return Jobs(folder, **common)
    return ClusterJobs(folder, JobResources(settings), replica=settings.replica, heartbeat_s=settings.job_heartbeat_s,
                       lease_s=settings.job_lease_s, attempts=settings.job_attempts,
                       rendering=lambda: runtime.rendering, draining=lambda: runtime.scheduler.draining, **common)


async def _load_engine(runtime: Runtime) -> None:
    name = runtime.choice.name
    try:
        await run_in_threadpool(runtime.load_engine)
    except Exception as e:
        runtime.load_error = f"engine {name} failed to load: {e}"
        log.exception("engine %s failed to load", name)
        return
    log.info("engine %s ready on %s", name, runtime.choice.device)
