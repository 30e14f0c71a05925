"""A trivial engine for server tests: real frames in, real frames out, no model.

It marks each output frame with a bar whose height follows the audio level, so a test can
tell that the audio reached the engine. `delay_s` makes it slow on purpose, and it records
how far it got, so tests can see incrementality and cancellation from the outside.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from musetalk_server.engines.base import AvatarFrames, Engine, FrameSession, LoadedAvatar, Renderer
from musetalk_server.errors import AvatarEngineMismatch
from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count, pingpong_index


class FakeEngine(Engine):
    name = "fake"
    artifact_version = 1

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None, prepare_delay_s: float = 0.0,
                 live: bool = False) -> None:
        self.live = live  # renderers have incremental rendering (real-time sessions); off: they refuse it
        self.delay_s = delay_s
        self.prepare_delay_s = prepare_delay_s
        self.fail_at = fail_at
        self.produced = 0  # frames yielded by the latest render
        self.finished_at: float | None = None  # when the latest render stopped, for whatever reason
        self.started = threading.Event()
        self.prepared = 0  # avatars prepared, to tell a recomputation from a reused avatar

    def describe(self) -> dict:
        return {"loaded": True, "device": "cpu", "kind": "fake"}

    def prepare(self, avatar: AvatarFrames, bbox_shift: int, out_dir: Path) -> dict:
        time.sleep(self.prepare_delay_s)
        self.prepared += 1
        (out_dir / "fake.json").write_text(json.dumps({"frames": len(avatar.frames)}))
        return {"bbox_shift_seen": bbox_shift}

    def open(self, avatar: LoadedAvatar) -> Renderer:
        if not (avatar.engine_dir / "fake.json").is_file():
            raise AvatarEngineMismatch("not a fake avatar")
        return _FakeRenderer(self, avatar)


class _FakeRenderer(Renderer):
    def __init__(self, engine: FakeEngine, avatar: LoadedAvatar) -> None:
        self.engine, self.avatar = engine, avatar

    def session(self, fps: float) -> FrameSession:
        if not self.engine.live:
            return super().session(fps)
        return _FakeFrames(self.avatar, fps)

    def render(self, audio: np.ndarray, fps: float, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        eng = self.engine
        eng.produced, eng.finished_at = 0, None
        eng.started.set()
        hop = SAMPLE_RATE / fps
        try:
            for i in range(frame_count(audio.size, fps)):
                if cancel is not None and cancel.is_set():
                    return
                if eng.fail_at is not None and i == eng.fail_at:
                    raise RuntimeError("fake engine failure")
                if eng.delay_s:
                    time.sleep(eng.delay_s)
                frame = self.avatar.frames[pingpong_index(i, len(self.avatar.frames))].copy()
                level = float(np.sqrt(np.mean(audio[int(i * hop): int((i + 1) * hop)] ** 2)))
                frame[: max(1, int(level * frame.shape[0])), :8] = 255
                eng.produced += 1
                yield frame
        finally:
            eng.finished_at = time.monotonic()


class _FakeFrames(FrameSession):
    """Live frames: the avatar's own, with a bar as tall as the frame's audio level while speaking."""

    lookahead_s = 0.0

    def __init__(self, avatar: LoadedAvatar, fps: float) -> None:
        self.avatar, self.hop = avatar, int(SAMPLE_RATE / fps)

    def speech_frame(self, utterance: int, i: int, background: int, audio: np.ndarray, final: bool) -> np.ndarray:
        frame = self.idle_frame(background)
        window = audio[i * self.hop:(i + 1) * self.hop]
        level = float(np.sqrt(np.mean(window ** 2))) if len(window) else 0.0
        frame[: max(1, int(level * frame.shape[0])), :8] = 255
        return frame

    def idle_frame(self, background: int) -> np.ndarray:
        return self.avatar.frames[background].copy()
