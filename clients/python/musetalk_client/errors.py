"""The one error a client call raises for anything the server refuses."""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """The server's error body: HTTP status (or WebSocket close code), `code` and `detail`, and
    `retry_after`, the seconds its `Retry-After` header asks a client to wait (a 429), else None."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after
