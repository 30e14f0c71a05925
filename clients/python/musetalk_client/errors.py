"""The one error a client call raises for anything the server refuses."""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """The server's error body: HTTP status (or WebSocket close code), `code` and `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail
