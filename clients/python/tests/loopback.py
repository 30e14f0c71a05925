"""A canned HTTP server on loopback (standard library only), so the client's tests need no MuseTalk server."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, str, bytes] | tuple[int, str, bytes, dict[str, str]]  # status, content type, body[, headers]


class CannedServer:
    """`with CannedServer({"/health": (200, "application/json", b"{}")}) as server:` answers every method
    at `server.url` and keeps what it was sent in `server.requests` (paths as sent: still escaped)."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # a WebSocket handshake's answer must be 1.1, even a refusal

            def _answer(self) -> None:
                seen.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)  # the upload, drained so the client sees the reply
                status, kind, body, *more = replies.get(self.path.split("?")[0], (404, "text/plain", b"no such path"))
                self.send_response(status)
                for name, value in (more[0] if more else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> CannedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
