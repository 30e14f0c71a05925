"""MuseTalk avatars for LiveKit Agents: a self-hosted real-time session as the agent's face.

    from musetalk_livekit import AvatarSession
    avatar = AvatarSession(avatar_id="anchor", url="http://127.0.0.1:8000")
    await avatar.start(session, room=ctx.room)     # before session.start(...)

`MuseTalkVideoGenerator` is the `VideoGenerator` underneath, for an `AvatarRunner` of your own.
"""

from .avatar import DEFAULT_SAMPLE_RATE, DEFAULT_URL, AvatarSession
from .generator import DEFAULT_KEEPALIVE_S, DEFAULT_MAX_AHEAD_S, MuseTalkVideoGenerator

__all__ = ["AvatarSession", "MuseTalkVideoGenerator", "DEFAULT_URL", "DEFAULT_SAMPLE_RATE", "DEFAULT_MAX_AHEAD_S",
           "DEFAULT_KEEPALIVE_S"]
