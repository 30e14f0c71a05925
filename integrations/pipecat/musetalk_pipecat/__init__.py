"""MuseTalk Server's real-time avatar inside Pipecat bots.

    from musetalk_pipecat import MuseTalkVideoService
    pipeline = Pipeline([..., tts, MuseTalkVideoService(base_url="http://127.0.0.1:8000", avatar_id="anchor"),
                         transport.output()])
"""

from .video import MuseTalkVideoService
from .wav_speaker import WavSpeaker

__all__ = ["MuseTalkVideoService", "WavSpeaker"]
