"""A connected-looking `rtc.Room` with no LiveKit server behind it.

AvatarRunner publishes its tracks through `room.local_participant.publish_track`, and
`AvatarSession.wait_for_join` waits for the local participant's video publication; this room
answers both at once and keeps what was published. The tracks, sources and the AVSynchronizer
are LiveKit's real ones (its native library runs offline); only the network is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from livekit import rtc


@dataclass
class Publication:
    track: rtc.LocalTrack
    kind: rtc.TrackKind.ValueType
    sid: str

    async def wait_for_subscription(self) -> None:
        return None  # as if a viewer subscribed at once


@dataclass
class LocalParticipant:
    room: OfflineRoom
    identity: str = "agent-offline"
    kind: rtc.ParticipantKind.ValueType = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    track_publications: dict[str, Publication] = field(default_factory=dict)

    async def publish_track(self, track: rtc.LocalTrack, options: Any = None) -> Publication:
        publication = Publication(track, track.kind, f"TR_offline_{len(self.track_publications)}")
        self.track_publications[publication.sid] = publication
        self.room.emit("local_track_published", publication, track)
        return publication


class OfflineRoom(rtc.EventEmitter[str]):
    name = "offline"

    def __init__(self) -> None:
        super().__init__()
        self.local_participant = LocalParticipant(self)
        self.remote_participants: dict[str, Any] = {}

    def isconnected(self) -> bool:
        return True

    def published(self, kind: rtc.TrackKind.ValueType) -> list[Publication]:
        return [p for p in self.local_participant.track_publications.values() if p.kind == kind]
