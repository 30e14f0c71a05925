"""Checking an SDP offer before anything is opened for it: the transceivers a role needs, and a codec.

A session's feeder offers an audio transceiver that sends or only receives (`sendrecv`,
`recvonly`) and a video one that receives (`recvonly`); a viewer receives both. `sendrecv` video
(or audio, from a viewer) is taken as receiving: what such a peer sends is ignored. The video
codec is H.264 when the offer has it (packetization mode 1, the only one browsers use), else
VP8; audio is Opus. Anything else answers 422 `invalid_sdp`, naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiortc.sdp import MediaDescription, SessionDescription

from ..errors import InvalidOffer
from .encoders import H264, VP8

__all__ = ["Offer", "Role", "check_offer"]

Role = Literal["feeder", "viewer"]
_RECEIVES = ("recvonly", "sendrecv")  # the offerer's own view: it receives what we send
_FEEDS = ("sendrecv", "recvonly")  # a feeder's audio: sending its microphone, or not yet


@dataclass(frozen=True)
class Offer:
    sdp: str
    video_codec: str  # H264 or VP8: the encoder of the session's broadcast that this peer takes
    sends_audio: bool  # the offerer's microphone comes up (feeder with `sendrecv` audio)
    data_channel: bool  # the offer has an application (SCTP) section


def check_offer(text: str, role: Role) -> Offer:
    """The offer if it fits `role`; InvalidOffer (422) naming the first thing that does not."""
    if not text.lstrip().startswith("v=0"):
        raise InvalidOffer("the body is not an SDP offer: it must begin with `v=0`")
    try:
        description = SessionDescription.parse(text)
    except Exception as e:  # aiortc's parser raises whatever its line splitting meets
        raise InvalidOffer(f"the SDP offer does not parse: {type(e).__name__} {e}".rstrip()) from e
    if not description.media:  # aiortc's parser skips lines it does not know, so garbage parses to nothing
        raise InvalidOffer("the SDP offer has no media sections (`m=` lines): it needs an audio and a video one")
    audio = _section(description, "audio")
    video = _section(description, "video")
    if video is None or video.direction not in _RECEIVES:
        raise InvalidOffer("the offer needs a video transceiver that receives (`recvonly`); "
                           f"it has {_describe(video)}")
    audio_ok = _FEEDS if role == "feeder" else _RECEIVES
    if audio is None or audio.direction not in audio_ok:
        raise InvalidOffer(f"the offer needs an audio transceiver that is {' or '.join(audio_ok)}; "
                           f"it has {_describe(audio)}")
    names = {c.mimeType.lower(): c for c in video.rtp.codecs}
    h264 = any(c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
               for c in video.rtp.codecs)
    if not h264 and "video/vp8" not in names:
        raise InvalidOffer("the offer's video has neither H.264 (packetization-mode=1) nor VP8")
    if not any(c.mimeType.lower() == "audio/opus" for c in audio.rtp.codecs):
        raise InvalidOffer("the offer's audio has no Opus")
    return Offer(sdp=text, video_codec=H264 if h264 else VP8,
                 sends_audio=role == "feeder" and audio.direction == "sendrecv",
                 data_channel=any(m.kind == "application" for m in description.media))


def _section(description: SessionDescription, kind: str) -> MediaDescription | None:
    return next((m for m in description.media if m.kind == kind and m.port != 0), None)


def _describe(media: MediaDescription | None) -> str:
    return "none" if media is None else f"one that is {media.direction or 'sendrecv'}"
