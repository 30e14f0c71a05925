"""A Python client for MuseTalk Server: HTTP and the real-time WebSocket, nothing else.

    from musetalk_client import Client
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        c.preprocess("anchor", "face.mp4")
        c.batch("anchor", "speech.wav", "anchor.mp4")
        for part in c.stream("anchor", "speech.wav"): ...
        with c.realtime("anchor", sample_rate=16000) as rt:
            rt.send_audio(pcm16_bytes); rt.end()
            for item in rt: ...   # RealtimeFrame or dict events
    # On an event loop: `async with await open_realtime(url, "anchor", sample_rate=24000) as rt: ...`
"""

from .client import Client
from .errors import ClientError
from .mjpeg import MjpegPart
from .pcm import mono_pcm16
from .realtime import LAST, SPEAKING, UNDERRUN, FrameHeader, RealtimeFrame, RealtimeSession, unpack_frame
from .realtime_async import AsyncRealtimeSession, open_realtime

__all__ = [
    "Client",
    "ClientError",
    "MjpegPart",
    "RealtimeFrame",
    "RealtimeSession",
    "AsyncRealtimeSession",
    "open_realtime",
    "FrameHeader",
    "unpack_frame",
    "SPEAKING",
    "LAST",
    "UNDERRUN",
    "mono_pcm16",
]
