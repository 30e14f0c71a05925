"""The HTTP process: the app on uvicorn, drained on SIGTERM (api/shutdown.py).

`musetalk-server serve` runs this; the CLI's other commands never load the web stack.
"""

from __future__ import annotations

import uvicorn

from .api import create_app
from .api.shutdown import FLUSH_S, DrainingServer
from .config import Settings

__all__ = ["serve"]


def serve(settings: Settings) -> None:
    app = create_app(settings)
    # The drain ends every render first, so uvicorn's own wait on connections is short.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=int(FLUSH_S))
    DrainingServer(config, app=app, grace_s=settings.shutdown_grace_s).run()
