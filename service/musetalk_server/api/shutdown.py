"""Graceful shutdown on SIGTERM: stop taking work, let running work finish, then exit.

uvicorn's own SIGTERM handling closes the listening socket at once and then waits on open
connections without limit. Here the first SIGTERM instead:
1. drains the scheduler: /health/ready answers 503 at once, new work gets 503 `not_ready`
   (the socket stays open, so a load balancer still reaching the pod gets an answer);
2. waits up to MUSETALK_SHUTDOWN_GRACE_S, less `FLUSH_S`, for admitted work to end;
3. revokes what still runs: each stream's next frame raises NotReady, so its body ends with an
   error part (`not_ready`), given `FLUSH_S` to reach the client;
4. then lets uvicorn exit. A second SIGTERM or a SIGINT exits at once, as uvicorn does.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ..device.scheduler import DeviceScheduler

__all__ = ["DrainingServer", "drain", "FLUSH_S"]

log = logging.getLogger(__name__)

FLUSH_S = 2.0  # for revoked streams' buffered frames and error parts to leave


def drain(scheduler: DeviceScheduler, grace_s: float) -> bool:
    """Blocking: steps 1-3 above. True when every admitted render ended on its own."""
    scheduler.drain()
    flush = min(FLUSH_S, grace_s)
    if scheduler.wait_idle(grace_s - flush):
        return True
    log.warning("shutdown: %d renders still running after %.1f s; ending them", scheduler.revoke(), grace_s - flush)
    scheduler.wait_idle(flush)
    return False


class DrainingServer(uvicorn.Server):
    """uvicorn, with the first SIGTERM draining the app's scheduler before it exits."""

    def __init__(self, config: uvicorn.Config, *, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app, self.grace_s = app, grace_s
        self._draining: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(self.app.state, "musetalk", None)  # None until the lifespan has started
        if sig != signal.SIGTERM or self._draining is not None or state is None:
            super().handle_exit(sig, frame)
            return
        log.info("SIGTERM: draining for up to %.1f s", self.grace_s)
        scheduler = state.runtime.scheduler
        self._draining = threading.Thread(target=self._drain_then_exit, args=(scheduler,), name="drain", daemon=True)
        self._draining.start()

    def _drain_then_exit(self, scheduler: DeviceScheduler) -> None:
        drain(scheduler, self.grace_s)
        self.should_exit = True
