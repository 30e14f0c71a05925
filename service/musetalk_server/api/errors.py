"""The one place where errors become HTTP: `{"detail": <message>, "code": <machine code>}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..disk.faults import is_full_disk
from ..errors import (
    InsufficientStorage,
    InvalidInput,
    MethodNotAllowed,
    MuseTalkError,
    RouteNotFound,
    TooLarge,
    Unauthorized,
    error_body,
)

__all__ = ["install_error_handlers", "error_body", "UnhandledErrorMiddleware", "allowed_methods"]

log = logging.getLogger(__name__)

_FULL_FOR_REQUEST = "the server ran out of storage for the request"
# The HTTP errors Starlette and FastAPI raise themselves, as the tree's codes. Their 400 is a body
# that could not be parsed (a malformed multipart form): to a client that is a malformed field.
_FRAMEWORK_ERRORS: dict[int, type[MuseTalkError]] = {
    400: InvalidInput, 401: Unauthorized, 404: RouteNotFound, 405: MethodNotAllowed, 413: TooLarge,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MuseTalkError)
    async def _ours(request: Request, exc: MuseTalkError) -> JSONResponse:
        if exc.status >= 500:  # with its cause, which the client is not told: "[Errno 28] No space left on device: '...'"
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ is not None else ""
            log.error("%s on %s: %s%s", exc.code, request.url.path, exc.detail, cause)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}")
        return await _ours(request, InvalidInput("; ".join(parts) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_full_disk(exc.__cause__):  # FastAPI wraps a body it could not spool in a 400
            return await _ours(request, InsufficientStorage(_FULL_FOR_REQUEST))
        error = _FRAMEWORK_ERRORS.get(exc.status_code)
        code = error.code if error else "http_error"
        status = error.status if error else exc.status_code
        headers = dict(exc.headers or {})
        if status == MethodNotAllowed.status:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSONResponse(error_body(str(exc.detail), code), status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_full_disk(exc):  # e.g. the multipart parser spooling a request body to a full disk
            return await _ours(request, InsufficientStorage(_FULL_FOR_REQUEST))
        # The trace goes to the log, never to the client.
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal server error", "internal_error"), status_code=500)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method the OpenAPI schema documents for the path the request matched, for `Allow`.

    Starlette answers 405 from the first route whose path matched and names that route's methods
    alone; a path served by several routes (GET and DELETE /avatars/{id}) has them all.
    """
    route = scope.get("route")
    documented = app.openapi()["paths"].get(getattr(route, "path_format", None), {})
    return sorted(m.upper() for m in documented) or sorted(getattr(route, "methods", None) or ())


class UnhandledErrorMiddleware:
    """Turn an unexpected exception into the generic 500 body, inside the app.

    Starlette runs the `Exception` handler above in its outermost layer, which re-raises after
    answering; uvicorn then closes the connection, and a client still finishing its upload sees a
    reset instead of the 500. Caught here, before that layer, the answer arrives whole.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:  # too late for a status code: let the server end the connection
                raise
            log.exception("unhandled error on %s", scope.get("path"))
            await JSONResponse(error_body("internal server error", "internal_error"), status_code=500)(
                scope, receive, send)
