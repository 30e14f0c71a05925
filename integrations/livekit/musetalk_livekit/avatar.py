"""`AvatarSession`: a MuseTalk avatar inside a LiveKit agent's own worker.

The in-process shape: the agent's TTS audio goes into a `QueueAudioOutput` (made the tail of the
agent session's audio output), an `AvatarRunner` reads it into the `MuseTalkVideoGenerator`, and
publishes the generator's frames through an `AVSynchronizer` as the agent participant's own audio and
video tracks. The avatar's identity in the room is therefore the agent's.

(The other shape, a separate avatar worker that joins the room and takes the audio over
`lk.audio_stream` with the `lk.clear_buffer` / `lk.playback_started` / `lk.playback_finished` RPCs,
needs a LiveKit server at both ends; this package does not provide it.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from livekit import rtc
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession

from musetalk_client import open_realtime

from .generator import DEFAULT_KEEPALIVE_S, DEFAULT_MAX_AHEAD_S, MuseTalkVideoGenerator

if TYPE_CHECKING:
    from livekit.agents import AgentSession

__all__ = ["AvatarSession", "DEFAULT_URL", "DEFAULT_SAMPLE_RATE"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_SAMPLE_RATE = 24_000  # most TTS and realtime-model voices speak at 24 kHz


class AvatarSession(BaseAvatarSession[Literal["metrics_collected"]]):
    """A MuseTalk avatar for a LiveKit `AgentSession`, published by the agent's own worker.

        avatar = AvatarSession(avatar_id="anchor")              # MUSETALK_URL, MUSETALK_API_KEY
        await avatar.start(session, room=ctx.room)              # before session.start(...)

    `url` and `api_key` default to the `MUSETALK_URL` and `MUSETALK_API_KEY` environment variables.
    The session's audio rate is `sample_rate`, else the agent session's TTS rate, else 24 kHz: the
    agent resamples its TTS to it, and the server speaks it back at the same rate. Give the agent
    session `resume_false_interruption=False` (see the README): the avatar's audio output cannot pause.
    If the MuseTalk session is lost mid-call, the agent speaks on through the same audio track, without
    video (`audio_passthrough_on_error=False` ends the runner instead; `generator.lost` says why).
    """

    def __init__(self, *, avatar_id: str, url: str | None = None, api_key: str | None = None,
                 sample_rate: int | None = None, max_ahead_s: float = DEFAULT_MAX_AHEAD_S,
                 audio_passthrough_on_error: bool = True, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> None:
        super().__init__()
        self.avatar_id = avatar_id
        self.url = url or os.environ.get("MUSETALK_URL", DEFAULT_URL)
        self._api_key = api_key or os.environ.get("MUSETALK_API_KEY") or None
        self._sample_rate = sample_rate
        self._max_ahead_s = max_ahead_s
        self._passthrough = audio_passthrough_on_error
        self._keepalive_s = keepalive_s
        self.generator: MuseTalkVideoGenerator | None = None
        self.runner: AvatarRunner | None = None
        self.audio_output: QueueAudioOutput | None = None

    @property
    def avatar_identity(self) -> str:
        """The agent participant's identity: in-process, it publishes the avatar's tracks."""
        room = self._room
        return room.local_participant.identity if room is not None and room.isconnected() else ""

    @property
    def provider(self) -> str:
        return "musetalk"

    async def start(self, agent_session: AgentSession[Any], room: rtc.Room) -> None:
        """Open the real-time session (a refusal raises `musetalk_client.ClientError`), start the
        runner, and route the agent's audio through the avatar."""
        # 1. The audio rate: the one asked for, else the agent's TTS rate, so nothing resamples twice.
        tts = agent_session.tts
        rate = self._sample_rate or (tts.sample_rate if tts is not None else DEFAULT_SAMPLE_RATE)
        # 2. The session: idle frames flow from here on, so the video track appears at once.
        session = await open_realtime(self.url, self.avatar_id, sample_rate=rate, api_key=self._api_key)
        self.generator = MuseTalkVideoGenerator(session, max_ahead_s=self._max_ahead_s,
                                                audio_passthrough_on_error=self._passthrough,
                                                keepalive_s=self._keepalive_s)
        # 3. The runner publishes through the agent's room, as the agent participant.
        self.audio_output = QueueAudioOutput(sample_rate=rate, wait_playback_start=True)
        options = AvatarOptions(video_width=self.generator.width, video_height=self.generator.height,
                                video_fps=self.generator.fps, audio_sample_rate=rate, audio_channels=1)
        self.runner = AvatarRunner(room, audio_recv=self.audio_output, video_gen=self.generator, options=options)
        try:
            await self.runner.start()
        except BaseException:
            await self.generator.aclose()
            raise
        # 4. The agent speaks into the avatar; the wrappers (transcript sync, recorder) stay in place.
        agent_session.output.replace_audio_tail(self.audio_output)
        await super().start(agent_session, room)

    async def aclose(self) -> None:
        """Stop the runner and close the session. The base class's removal of the avatar participant
        is skipped: in-process, that participant is the agent itself."""
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        if self.generator is not None:
            await self.generator.aclose()
            self.generator = None
        if self._room is not None:
            self._room.off("connection_state_changed", self._on_connection_state_changed)
            self._room = None  # so the base class does not remove the agent from its own room
        await super().aclose()
