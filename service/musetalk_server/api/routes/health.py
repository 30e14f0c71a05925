"""Health, probes and metrics. None of these need the API key: probes and scrapers carry none."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ... import __version__
from ...errors import error_body
from ..deps import StateDep
from ..models import Health, Live, Ready
from ..openapi import METRICS_RESPONSE, error_responses

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(state: StateDep) -> dict:
    """The seed's status body, plus the engine's own facts."""
    rt = state.runtime
    described = rt.engine.describe() if rt.engine else {"loaded": False, "device": rt.choice.device}
    return {
        "status": "running",
        "models": {"loaded": bool(described.get("loaded")), "device": str(described.get("device", rt.choice.device))},
        "loaded_avatars": state.loaded_avatars(),
        "engine": state.engine_name,
        "engine_info": {k: v for k, v in described.items() if k not in ("loaded", "device")},
        "version": __version__,
        "avatar_source": state.settings.avatar_source,
        "active_streams": len(state.streams),
    }


@router.get("/health/live", response_model=Live)
async def live() -> dict:
    return {"status": "alive"}


@router.get("/health/ready", response_model=Ready, responses=error_responses("probe"))
async def ready(state: StateDep) -> Response:
    rt = state.runtime
    if rt.scheduler.draining:
        return JSONResponse(error_body("the server is shutting down", "not_ready"), status_code=503)
    if rt.engine is None:
        reason = rt.load_error or f"engine {state.engine_name} is loading"
        return JSONResponse(error_body(reason, "not_ready"), status_code=503)
    if not rt.store.writable():
        return JSONResponse(error_body(f"avatar store {rt.store.root} is not writable", "not_ready"), status_code=503)
    return JSONResponse({"status": "ready", "engine": state.engine_name})


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSE)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
