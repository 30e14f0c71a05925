"""The app factory. Models load in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..avatars.kube import AvatarResources
from ..avatars.store import AvatarStore
from ..config import Settings
from ..engines.base import Engine
from ..engines.registry import create_engine, resolve_engine_name
from ..errors import WeightsError
from .errors import UnhandledErrorMiddleware, install_error_handlers
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from .openapi import DESCRIPTION
from .routes import avatars, health, inference, preview
from .state import AppState
from .web import install_cors, install_offline_docs, install_page

__all__ = ["create_app", "choose_engine"]

log = logging.getLogger(__name__)


def choose_engine(settings: Settings) -> tuple[str, str]:
    """(engine name, device). The one place that looks for a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    name = resolve_engine_name(settings.engine, model_dir=settings.model_dir, cuda=cuda)
    device = f"cuda:{settings.gpu_id}" if cuda and name == "musetalk" else "cpu"
    if name == "musetalk":
        from ..engines.musetalk.weights import missing_weights

        missing = missing_weights(settings.model_dir)
        if missing:  # fail start-up loudly instead of falling back behind the user's back
            raise WeightsError(
                f"MUSETALK_ENGINE=musetalk but weights are missing under {settings.model_dir}: " + ", ".join(missing)
            )
    return name, device


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the service. Pass `engine` to serve a ready-made one (tests, embedding)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        name, device = (engine.name, str(engine.describe().get("device", "cpu"))) if engine else choose_engine(settings)
        pool_size = max(2, os.cpu_count() or 2)
        store = AvatarStore(settings.avatar_dir)
        store.ensure()
        # In local mode this process is the only writer, so any staging folder is a dead one.
        store.sweep(older_than_s=0 if settings.avatar_source == "local" else 6 * 3600)
        state = AppState(
            settings=settings, store=store, metrics=metrics, engine_name=name, device=device,
            pool=ThreadPoolExecutor(pool_size, thread_name_prefix="encode"), pool_size=pool_size,
            preprocess_slots=asyncio.Semaphore(1),
        )
        if settings.avatar_source == "kubernetes":
            state.resources = AvatarResources(settings)
        metrics.queue_depth.set_function(lambda: sum(s.buffered for s in list(state.streams)))
        app.state.musetalk = state
        loader = None
        if engine is not None:
            state.set_engine(engine)
        else:
            loader = asyncio.create_task(_load_engine(state))
        log.info("MuseTalk Server %s: engine %s on %s, avatars in %s", __version__, name, device, store.root)
        try:
            yield
        finally:
            if loader:
                loader.cancel()
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
    install_cors(app, settings)
    for module in (health, avatars, preview, inference):
        app.include_router(module.router)
    install_offline_docs(app)
    install_page(app)
    return app


async def _load_engine(state: AppState) -> None:
    s = state.settings
    try:
        engine = await run_in_threadpool(
            create_engine, state.engine_name, model_dir=s.model_dir, device=state.device, batch_size=s.batch_size
        )
    except Exception as e:
        state.load_error = f"engine {state.engine_name} failed to load: {e}"
        log.exception("engine %s failed to load", state.engine_name)
        return
    state.set_engine(engine)
    log.info("engine %s ready on %s", state.engine_name, state.device)
