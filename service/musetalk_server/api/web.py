"""The browser side of the service: the demo page, offline API docs, and CORS.

Everything the page and the docs load is served from this process (no CDN), with relative URLs,
so both work on an air-gapped machine and behind an ingress path prefix.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers

from ..config import Settings
from ..errors import CorsRefused

__all__ = ["EXPOSED_HEADERS", "STATIC_DIR", "ErrorShapedCORS", "install_cors", "install_offline_docs", "install_page"]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
# Swagger UI and ReDoc, shipped inside the fastapi-offline wheel.
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
# Response headers a script on another origin may read: the stream's and the MP4's timing facts,
# the download's file name, where a made resource is (a WebRTC session, which its page DELETEs to
# hang up; an async job) and when to come back after a 429.
EXPOSED_HEADERS = ["X-Frame-Rate", "X-Frame-Count", "X-Audio-Duration-Ms", "Content-Disposition", "Location",
                   "Retry-After"]
# The docs pages may load nothing from elsewhere: ReDoc's bundle fetches a logo from its CDN, and
# Swagger UI a validator badge, which would hang or leak on an air-gapped machine.
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def install_page(app: FastAPI) -> None:
    """`GET /` is the demo page; its scripts and styles live under `/static`."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def offline_redoc_bundle() -> bytes:
    """ReDoc's bundle with its one hard-wired CDN image (the sidebar's logo) pointed at our favicon."""
    bundle = (DOCS_ASSETS / REDOC_BUNDLE).read_bytes()
    return bundle.replace(REDOC_CDN_LOGO, b"docs-assets/favicon.png")


def install_offline_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from bundled assets. Build the app with docs_url=None, redoc_url=None."""
    redoc_js = offline_redoc_bundle()

    @app.get(f"/docs-assets/{REDOC_BUNDLE}", include_in_schema=False)
    async def redoc_bundle() -> Response:  # declared before the mount, so it wins over the file
        return Response(redoc_js, media_type="text/javascript")

    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    # Relative to /docs and /redoc, so a path prefix in front of the service changes nothing.
    schema, assets = "openapi.json", "docs-assets"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=schema, title=f"{app.title} - Swagger UI", swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_POLICY
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=schema, title=f"{app.title} - ReDoc", redoc_js_url=f"{assets}/{REDOC_BUNDLE}",
            redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_POLICY
        return page


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Off unless MUSETALK_CORS_ORIGINS lists origins. Add it last: outermost, so even a 413 carries it."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(
        ErrorShapedCORS, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS, max_age=600,
    )


class ErrorShapedCORS(CORSMiddleware):
    """Starlette's CORS, whose refused preflight (a plain-text 400, "Disallowed CORS origin") has the
    one error shape instead: `cors_refused`, with Starlette's words."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        error = CorsRefused(f"the preflight is refused: {bytes(response.body).decode(errors='replace')}")
        return JSONResponse(error.body(), status_code=error.status,
                            headers={k: v for k, v in response.headers.items() if k.startswith("access-control-")})
