"""The real-time WebSocket with the musetalk engine (tiny random models in upstream's layout).

On the CPU the tiny models do not keep up with 25 fps, so frames may come late or underrun;
what must hold whatever the speed is the protocol: idle, then one utterance whose speaking
frames give back its audio exactly, then idle again.
"""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
from websockets.sync.client import connect

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.media.audio import decode_audio
from servers import preprocess, wait_ready


def test_a_musetalk_session_speaks_one_utterance_and_idles(tmp_path, musetalk_dir):
    app = create_app(Settings(_env_file=None, result_dir=tmp_path / "results", engine="musetalk",
                              model_dir=musetalk_dir))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        wait_ready(server)  # the models load in the background
        assert preprocess(client, "seed", media("seed_short_test_video.mp4")).status_code == 200
        pcm = (np.clip(decode_audio(media("vr_audio1.wav"))[:8000], -1, 1) * 32767).astype("<i2").tobytes()
        frames, events = [], []
        with connect(server.url.replace("http", "ws") + "/inference/realtime/seed", max_size=None) as ws:
            ready = json.loads(ws.recv(timeout=30))
            ws.send(pcm)
            ws.send(json.dumps({"type": "end"}))
            while not any(e["type"] == "speech_ended" for e in events) or len(frames) < 3 + events[-1]["frame"]:
                m = ws.recv(timeout=30)
                if isinstance(m, str):
                    events.append(json.loads(m))
                else:
                    head = struct.unpack_from("<4sIIIHHI", m)
                    frames.append((head, m[24 + head[6]:]))
    assert ready["width"] == 704 and ready["height"] == 1216
    start, end = events[0]["frame"], events[-1]["frame"]
    assert [e["type"] for e in events] == ["speech_started", "speech_ended"] and events[-1]["reason"] == "end"
    spoken = b"".join(audio for head, audio in frames if head[3] == 1 and not head[4] & 4)
    assert spoken == pcm + bytes(-len(pcm) % 1280) and frames[end][0][4] & 2
    assert all(head[3:5] == (0, 0) for head, _ in frames[:start] + frames[end + 1:])
