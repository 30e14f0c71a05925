"""Pure ASGI middleware: request metrics, refusing oversize bodies before they are read, and
naming the replica that answered (cluster mode)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import TooLarge
from ..metrics import Metrics

__all__ = ["BodyLimitMiddleware", "ReplicaHeaderMiddleware", "RequestMetricsMiddleware"]

_MULTIPART_SLACK = 64 * 1024  # form boundaries and the other fields ride along with the file


class BodyLimitMiddleware:
    """Answer 413 at once when Content-Length already says the body is too big."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit + _MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                error = TooLarge(f"request body of {int(length)} bytes is over the limit")
                body = json.dumps(error.body()).encode()
                await send({"type": "http.response.start", "status": error.status,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # The route template, not the raw path, keeps label cardinality bounded.
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()


class ReplicaHeaderMiddleware:
    """`X-Replica: <name>` on every answer, so that an operator (or a test) behind a load balancer
    can tell which pod answered a request: a job poll, a stream that ended early."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.header = app, (b"x-replica", replica.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)
