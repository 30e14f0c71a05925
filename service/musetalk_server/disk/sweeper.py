"""The sweeper: uploads and outputs left behind (a killed process, a lost client) go after a TTL.

Uploads and MP4s live in `$MUSETALK_RESULT_DIR/uploads` and `/outputs` only while a request
uses them, and each request removes its own. A `kill -9` skips that, so the folders are swept
at start-up and then every so often; a file in use is written to or read within the TTL.

In cluster mode an upload outlives its request: the Avatar resource reads it (its `videoPath`)
for as long as it exists, a Job that waits an hour for a GPU or a later spec edit included. Those
files are named by `in_use` and never swept; the operator removes them with their Avatar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from starlette.concurrency import run_in_threadpool

__all__ = ["TEMP_DIRS", "sweep_temp", "sweep_forever", "sweep_interval"]

log = logging.getLogger(__name__)

TEMP_DIRS = ("uploads", "outputs")
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 300.0
SWEEPS_PER_TTL = 4  # a stale file outlives its TTL by at most a quarter of it


InUse = Callable[[], Collection[str]]  # paths relative to the result folder ("uploads/x.mp4") still needed


def sweep_temp(result_dir: Path, older_than_s: float, in_use: InUse | None = None) -> int:
    """Remove files under the temp folders last modified over `older_than_s` ago, except those
    `in_use` names (asked once, before any is removed). Returns how many."""
    keep = set(in_use()) if in_use is not None else set()
    removed, now = 0, time.time()
    for name in TEMP_DIRS:
        folder = Path(result_dir) / name
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if f"{name}/{entry.name}" in keep:
                continue
            try:
                if entry.is_file() and now - entry.stat().st_mtime >= older_than_s:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # its request removed it meanwhile
    if removed:
        log.info("swept %d leftover upload/output files from %s", removed, result_dir)
    return removed


def sweep_interval(ttl_s: float) -> float:
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, ttl_s / SWEEPS_PER_TTL))


async def sweep_forever(result_dir: Path, ttl_s: float, in_use: InUse | None = None, at_once: bool = False) -> None:
    """Sweep every `sweep_interval(ttl_s)` seconds (the first at once if `at_once`) until cancelled;
    a failed sweep is logged, not fatal. One that cannot learn what is in use (the API server
    unreachable) removes nothing."""
    while True:
        if not at_once:
            await asyncio.sleep(sweep_interval(ttl_s))
        at_once = False
        try:
            await run_in_threadpool(sweep_temp, result_dir, ttl_s, in_use)
        except Exception:
            log.exception("sweeping %s failed; trying again later", result_dir)
