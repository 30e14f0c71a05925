"""Request setup: what a render is of, checked before the first byte of any response.

Every check that can fail is made here, once: the avatar exists and fits the engine, the audio
decodes, and it lasts at least one frame. `entry.RenderEntry` runs these checks and then admits
the render on the device scheduler.

The frame rate is the avatar's own (its manifest's `fps`), never the serving setting: the
avatar's background was re-timed onto that clock at preprocessing, so rendering it at another
rate would play the person's motion fast or slow. `MUSETALK_FPS` sets the clock of avatars
preprocessed from now on; a mismatch is logged, and the response's X-Frame-Rate tells clients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..avatars.cache import AvatarCache
from ..engines.base import LoadedAvatar, Renderer
from ..errors import InvalidInput
from ..media.audio import decode_audio, to_pcm16
from ..media.frame_timing import SAMPLE_RATE, frame_count

__all__ = ["RenderRequest", "SpeechRequest", "RequestChecks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderRequest:
    """What every render is of: an avatar in memory, the engine's renderer for it, its frame rate.
    A real-time session is one of these alone: its audio arrives as it is spoken."""

    avatar: LoadedAvatar
    renderer: Renderer
    fps: float  # the avatar's

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        h, w = self.avatar.frames[0].shape[:2]
        return w, h


@dataclass(frozen=True)
class SpeechRequest(RenderRequest):
    """A render of audio known in full (a stream, a batch, an async job)."""

    audio: np.ndarray  # (S,) float32, 16 kHz mono
    frames: int  # = frame_count(S, fps), at least 1
    mux: np.ndarray | None = None  # (C, S) int16: the upload again at the MP4's audio rate, mono or stereo, for that sink only

    @property
    def duration_ms(self) -> float:
        return self.audio.size / SAMPLE_RATE * 1000


class RequestChecks:
    """Builds checked requests over the loaded avatars. Every method is blocking (disk, decode)."""

    def __init__(self, cache: AvatarCache, *, max_audio_seconds: float, serving_fps: float) -> None:
        self.cache, self.max_audio_seconds, self.serving_fps = cache, max_audio_seconds, serving_fps

    def avatar(self, avatar_id: str) -> RenderRequest:
        """The avatar: exists (AvatarNotFound), fits this engine (AvatarEngineMismatch), in memory."""
        avatar, renderer = self.cache.get(avatar_id)
        if avatar.fps != self.serving_fps:
            log.info("avatar %s was preprocessed at %g fps; rendering at that rate, not MUSETALK_FPS=%g",
                     avatar_id, avatar.fps, self.serving_fps)
        return RenderRequest(avatar, renderer, avatar.fps)

    def speech(self, target: RenderRequest, audio_path: Path, *, mux_rate: int | None = None) -> SpeechRequest:
        """The audio for `target`: it decodes (UnsupportedMedia, EmptyMedia, TooLarge) and lasts a frame."""
        # 1. the audio, 16 kHz mono; the MP4's own track is decoded again at its rate, not upsampled,
        #    and in stereo where the upload is
        audio = decode_audio(audio_path, max_seconds=self.max_audio_seconds)
        mux = to_pcm16(decode_audio(audio_path, rate=mux_rate, keep_stereo=True)) if mux_rate else None
        return self.decoded(target, audio, mux)

    def decoded(self, target: RenderRequest, audio: np.ndarray, mux: np.ndarray | None = None) -> SpeechRequest:
        """Audio decoded already (`speech`, or a job's saved audio taken over): it lasts a frame."""
        # 2. at least one frame
        frames = frame_count(audio.size, target.fps)
        if frames == 0:
            raise InvalidInput(f"audio lasts {audio.size / SAMPLE_RATE * 1000:.0f} ms, "
                               f"shorter than one frame at {target.fps:g} fps")
        return SpeechRequest(target.avatar, target.renderer, target.fps, audio, frames, mux)
