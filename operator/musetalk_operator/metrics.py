"""The operator's Prometheus metrics, served by __main__ next to Kopf's liveness probe."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["JOBS_STARTED", "JOBS_SUCCEEDED", "JOBS_FAILED", "JOB_SECONDS"]

JOBS_STARTED = Counter("musetalk_operator_jobs_started_total", "Preprocessing Jobs created")
JOBS_SUCCEEDED = Counter("musetalk_operator_jobs_succeeded_total", "Avatars that became Ready")
JOBS_FAILED = Counter("musetalk_operator_jobs_failed_total", "Avatars whose preprocessing Job failed")
JOB_SECONDS = Histogram(
    "musetalk_operator_job_seconds",
    "Wall time of finished preprocessing Jobs, from start to completion or failure",
    ["outcome"],  # succeeded, failed
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
for _outcome in ("succeeded", "failed"):  # exported (as zeros) before the first Job ends, as the counters are
    JOB_SECONDS.labels(_outcome)
