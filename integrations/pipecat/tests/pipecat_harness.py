"""A real Pipecat pipeline around the service for the tests: [recorder of upstream frames, a WAV
speaking as the TTS, MuseTalkVideoService, recorder of downstream frames], run by Pipecat's own
worker and runner on the test's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from musetalk_pipecat import MuseTalkVideoService, WavSpeaker
from pipecat.frames.frames import EndFrame, Frame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

WAIT_S = 20.0  # for a condition on the frames: a lite frame is milliseconds, a session opens in seconds


class Recorder(FrameProcessor):
    """Keeps (arrival time, frame) for every frame going one way, and passes everything on."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def of(self, kind: type | tuple[type, ...]) -> list:
        return [f for _, f in self.frames if isinstance(f, kind)]

    async def wait_for(self, done: Callable[[list[Frame]], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not done([f for _, f in self.frames]):
            if time.monotonic() > deadline:
                kinds = [type(f).__name__ for _, f in self.frames[-20:]]
                raise TimeoutError(f"condition not met in {timeout} s; last frames: {kinds}")
            await asyncio.sleep(0.02)


@dataclass
class Bot:
    worker: PipelineWorker
    service: MuseTalkVideoService
    speaker: WavSpeaker
    up: Recorder
    down: Recorder

    async def queue(self, frame: Frame) -> None:
        await self.worker.queue_frame(frame)


@asynccontextmanager
async def running_bot(service: MuseTalkVideoService, speaker: WavSpeaker, *,
                      audio_out_sample_rate: int = 24000) -> AsyncIterator[Bot]:
    up, down = Recorder(FrameDirection.UPSTREAM), Recorder(FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(Pipeline([up, speaker, service, down]), cancel_on_idle_timeout=False,
                            params=PipelineParams(audio_out_sample_rate=audio_out_sample_rate, enable_metrics=True))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    bot = Bot(worker, service, speaker, up, down)
    try:
        await down.wait_for(lambda frames: any(isinstance(f, StartFrame) for f in frames))
        yield bot
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, WAIT_S)
    finally:
        if not running.done():
            await worker.cancel()
            await asyncio.wait_for(running, WAIT_S)
