"""The one error a client call raises for anything the server refuses."""

from __future__ import annotations

import json

__all__ = ["ClientError", "error_from"]


class ClientError(Exception):
    """The server's error body: HTTP status (or WebSocket close code), `code` and `detail`, and
    `retry_after`, the seconds its `Retry-After` header asks a client to wait (a 429), else None."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after


def error_from(status: int, body: bytes | bytearray, retry_after: str | None = None) -> ClientError:
    """An error answer (to an HTTP call, or to the WebSocket upgrade) as a ClientError: the body's
    `code` and `detail`, or `http_error` and its text where it is not the JSON error shape (a
    proxy's page); `retry_after` is the `Retry-After` header, kept in seconds (the server sends a
    number; an HTTP date from a proxy is left out)."""
    text = bytes(body).decode(errors="replace")
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None
    try:
        fields = json.loads(body)
    except ValueError:
        return ClientError(status, "http_error", text, seconds)
    return ClientError(status, fields.get("code", "http_error"), fields.get("detail", text), seconds)
