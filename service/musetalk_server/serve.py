"""The HTTP process: the app on uvicorn, drained on SIGTERM (api/shutdown.py).

`musetalk-server serve` runs this; the CLI's other commands never load the web stack.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from .api import create_app
from .api.shutdown import FLUSH_S, DrainingServer
from .config import Settings

__all__ = ["serve"]


def serve(settings: Settings, app: FastAPI | None = None, log_level: str = "info") -> None:
    """Serve `app` (by default the service built from `settings`) until SIGTERM has drained it."""
    app = app or create_app(settings)
    # The drain ends every render first, so uvicorn's own wait on connections is short.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=int(FLUSH_S))
    DrainingServer(config, app=app, grace_s=settings.shutdown_grace_s).run()
