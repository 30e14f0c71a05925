"""Prometheus metrics. One registry per app, so tests can build many apps in one process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "RenderTracker"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FPS_BUCKETS = (5, 10, 25, 50, 100, 200, 400, 800, 1600)
_FIRST_SPEECH_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
_ENCODE_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)
_PREPROCESS_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "musetalk_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.frames = Counter("musetalk_frames_generated", "Frames rendered", ["engine", "mode"], registry=r)
        self.ttff = Histogram(
            "musetalk_time_to_first_frame_seconds",
            "From request to the first rendered frame",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.render_fps = Histogram(
            "musetalk_render_fps", "Frames per second of each finished request", ["mode"], buckets=_FPS_BUCKETS, registry=r
        )
        self.active_streams = Gauge("musetalk_active_streams", "Streams and batch renders in progress", registry=r)
        self.queue_depth = Gauge("musetalk_queue_depth", "Rendered frames waiting to be sent", registry=r)
        self.preprocess_seconds = Histogram(
            "musetalk_preprocess_seconds", "Avatar preprocessing duration", ["outcome"], buckets=_PREPROCESS_BUCKETS, registry=r
        )
        self.preprocess_active = Gauge("musetalk_preprocess_active", "Preprocessing jobs in progress", registry=r)
        self.avatars_loaded = Gauge("musetalk_avatars_loaded", "Avatars held in memory", registry=r)
        # Real-time sessions.
        self.realtime_sessions = Gauge("musetalk_realtime_sessions", "Real-time sessions open", registry=r)
        self.realtime_frames = Counter(
            "musetalk_realtime_frames", "Real-time frames sent, by kind (idle, speech, underrun)", ["kind"], registry=r
        )
        self.realtime_first_speech = Histogram(
            "musetalk_realtime_first_speech_seconds",
            "From an utterance's first audio chunk to its first speaking frame sent",
            buckets=_FIRST_SPEECH_BUCKETS,
            registry=r,
        )
        self.realtime_lateness = Histogram(
            "musetalk_realtime_frame_lateness_seconds", "How late frames leave against their session's clock",
            buckets=_LATENESS_BUCKETS, registry=r,
        )
        self.realtime_underruns = Counter("musetalk_realtime_underruns", "Runs of frames whose audio had not arrived",
                                          registry=r)
        self.realtime_interrupts = Counter("musetalk_realtime_interrupts", "Interrupts received", registry=r)
        # WebRTC (webrtc/): peer connections, and the one encoder per session and codec they share.
        self.webrtc_peers = Gauge("musetalk_webrtc_peers", "WebRTC peer connections open, by role (feeder, viewer)",
                                  ["role"], registry=r)
        self.webrtc_bytes = Counter("musetalk_webrtc_bytes_sent",
                                    "Media payload handed to WebRTC senders, all peers, by kind (audio, video); "
                                    "rate() x 8 is the bitrate", ["kind"], registry=r)
        self.webrtc_encoders = Gauge("musetalk_webrtc_encoders", "Video encoders alive, by codec", ["codec"],
                                     registry=r)
        self.webrtc_encode_seconds = Histogram("musetalk_webrtc_encode_seconds",
                                               "CPU time to encode one video frame, by codec", ["codec"],
                                               buckets=_ENCODE_BUCKETS, registry=r)
        self.webrtc_keyframes = Counter("musetalk_webrtc_keyframes", "Video key frames encoded (each reaches every "
                                        "viewer of its session)", registry=r)
        # The device scheduler (device/scheduler.py).
        self.sched_queue = Gauge("musetalk_scheduler_queue_depth", "Requests waiting for the device, by priority",
                                 ["priority"], registry=r)
        self.sched_admitted = Counter("musetalk_scheduler_admitted", "Work admitted, by kind", ["kind"], registry=r)
        self.sched_refused = Counter("musetalk_scheduler_refused", "Work refused with 429 busy, by kind", ["kind"],
                                     registry=r)
        self.sched_load = Gauge("musetalk_scheduler_load",
                                "Share of the real-time capacity the admitted paced work claims", registry=r)
        self.sched_frame_seconds = Gauge("musetalk_scheduler_frame_seconds",
                                         "Estimated cost of one frame (EWMA of measurements)", ["engine", "size"],
                                         registry=r)
        self.device_batch = Histogram("musetalk_device_batch_frames", "Frames per device call (all streams)",
                                      buckets=_BATCH_BUCKETS, registry=r)
        self.lateness = Histogram("musetalk_stream_lateness_seconds",
                                  "How late each paced frame left against its stream's clock", ["mode"],
                                  buckets=_LATENESS_BUCKETS, registry=r)
        self.jobs = Gauge("musetalk_jobs", "Async batch jobs held, by state", ["state"], registry=r)

    @contextmanager
    def preprocessing(self) -> Iterator[None]:
        """Count one preprocess while it runs, and time it by outcome."""
        self.preprocess_active.inc()
        started, outcome = time.perf_counter(), "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.preprocess_active.dec()
            self.preprocess_seconds.labels(outcome).observe(time.perf_counter() - started)

    def render(self, mode: str, engine: str) -> RenderTracker:
        return RenderTracker(self, mode, engine)


class RenderTracker:
    """One render's metrics: in progress, time to first frame, frames, and frames/s at the end."""

    def __init__(self, metrics: Metrics, mode: str, engine: str) -> None:
        self.metrics, self.mode, self.engine = metrics, mode, engine
        self.started = time.perf_counter()
        self.sent = 0

    def __enter__(self) -> RenderTracker:
        self.metrics.active_streams.inc()
        return self

    def __exit__(self, *exc: object) -> None:
        self.metrics.active_streams.dec()
        elapsed = time.perf_counter() - self.started
        if self.sent and elapsed > 0:
            self.metrics.render_fps.labels(self.mode).observe(self.sent / elapsed)

    def first_frame(self) -> None:
        self.metrics.ttff.labels(self.mode).observe(time.perf_counter() - self.started)

    def late(self, seconds: float) -> None:
        """A paced frame left `seconds` after its place on the stream's clock."""
        self.metrics.lateness.labels(self.mode).observe(max(0.0, seconds))

    def frames(self, n: int = 1) -> None:
        self.sent += n
        self.metrics.frames.labels(self.engine, self.mode).inc(n)
