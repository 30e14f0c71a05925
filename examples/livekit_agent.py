"""A LiveKit voice agent whose face is a MuseTalk avatar (the `musetalk-livekit` plugin).

What it needs, none of which the project's test machine has (its tests only import this file and
start the avatar half against a real MuseTalk server):
- a LiveKit server and its keys: `LIVEKIT_URL`, `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`;
- a real STT, LLM and TTS: the model strings below go through LiveKit Inference (LiveKit Cloud);
  set `AGENT_STT`, `AGENT_LLM`, `AGENT_TTS` to other model strings, or replace them with plugin
  objects (`livekit-plugins-openai`, `-deepgram`, `-cartesia`...) and your own provider keys;
- a MuseTalk server with a preprocessed avatar: `MUSETALK_URL` (http://127.0.0.1:8000),
  `MUSETALK_AVATAR` (anchor), and `MUSETALK_API_KEY` if the server sets one.

    make serve                                   # the MuseTalk server, in another shell
    curl -F avatar_id=anchor -F video_file=@examples/media/face.mp4 localhost:8000/avatars/preprocess
    pip install ./clients/python ./integrations/livekit     # in the agent's own venv
    python examples/livekit_agent.py dev

Then join the room from any LiveKit client (the Agents Playground, a LiveKit web app): the agent
participant publishes the avatar's video and its voice, lip-synced.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from musetalk_livekit import AvatarSession

server = AgentServer()


def agent_session() -> AgentSession:
    """The voice pipeline. The avatar's audio output cannot pause, so an interruption that turns out
    to be false cannot be resumed: `resume_false_interruption` is off, as every avatar plugin needs."""
    return AgentSession(
        stt=os.environ.get("AGENT_STT", "deepgram/nova-3"),
        llm=os.environ.get("AGENT_LLM", "openai/gpt-4.1-mini"),
        tts=os.environ.get("AGENT_TTS", "cartesia/sonic-3"),
        turn_handling={"interruption": {"resume_false_interruption": False}},
    )


def avatar() -> AvatarSession:
    """MUSETALK_URL and MUSETALK_API_KEY are read by AvatarSession itself; the session's audio rate
    follows the agent's TTS."""
    return AvatarSession(avatar_id=os.environ.get("MUSETALK_AVATAR", "anchor"))


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = agent_session()
    face = avatar()
    await face.start(session, room=ctx.room)  # before session.start: the agent's audio goes to the avatar
    await session.start(agent=Agent(instructions="You are a friendly assistant. Keep replies short."),
                        room=ctx.room)
    session.generate_reply(instructions="Greet the user and offer your help.")


if __name__ == "__main__":
    cli.run_app(server)
