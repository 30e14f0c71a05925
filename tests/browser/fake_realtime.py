"""A stand-in for `WS /inference/realtime/{avatar_id}` (issue 9), for the browser tests only.

It speaks the issue's wire contract, so the page's live parts are tested for real now:
`ready`, then one binary message per frame at F frames per second of wall time, each a 24-byte
header `<4sIIIHHI` + JPEG + that frame's share of the audio. Audio that arrives while idle opens
an utterance; its frames are flagged speaking and carry the audio back, `end` closes it with a
last frame, `interrupt` drops it, a short buffer mid-utterance gives underrun frames.

It is no lip-sync engine: a speaking frame is the avatar's own frame with the mouth (from its
FaceMesh landmarks) darkened in proportion to the audio level. Once the real endpoint exists,
the browser tests use it instead: see `REALTIME_STAND_IN` in conftest.py.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import struct
import time

import cv2
import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from musetalk_server.avatars.layout import LANDMARKS_FILE
from musetalk_server.avatars.store import read_frame
from musetalk_server.face.landmarks import LIPS_OUTER
from musetalk_server.media.timeline import pingpong_index

HEADER = struct.Struct("<4sIIIHHI")
MAGIC = b"MTF1"
SPEAKING, LAST, UNDERRUN = 1, 2, 4
DEFAULT_RATE = 16_000
FRAMES_USED = 25  # enough of the avatar for a visible ping-pong, quick to load
JPEG_QUALITY = 80


def install(app: FastAPI) -> None:
    """Add the stand-in route to the app (before it starts)."""
    app.add_api_websocket_route("/inference/realtime/{avatar_id}", _session)


def mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the outer lips of one frame's landmarks."""
    lips = landmarks[list(LIPS_OUTER)]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    return int(x0), int(y0), int(x1), int(y1)


class _Avatar:
    def __init__(self, folder, fps: float) -> None:
        marks = np.load(folder / LANDMARKS_FILE)
        self.frames = [read_frame(folder, i) for i in range(min(FRAMES_USED, len(marks)))]
        self.boxes = [mouth_box(marks[i]) for i in range(len(self.frames))]
        self.idle = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
                     for f in self.frames]

    def jpeg(self, index: int, level: float) -> bytes:
        b = pingpong_index(index, len(self.frames))
        if level <= 0:
            return self.idle[b]
        frame = self.frames[b].copy()
        x0, y0, x1, y1 = self.boxes[b]
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        opening = max(2, int((y1 - y0) * min(1.0, level * 8)))
        cv2.ellipse(frame, (cx, cy), ((x1 - x0) * 2 // 5, opening), 0, 0, 360, (20, 10, 40), -1)
        return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


class _Session:
    def __init__(self) -> None:
        self.rate = DEFAULT_RATE
        self.buffer = bytearray()
        self.utterance = 0  # the open utterance, 0 when idle
        self.count = 0
        self.ended = False
        self.cut = False  # an interrupt: the next frame is idle
        self.started = 0  # the last utterance announced with speech_started

    def audio(self, data: bytes) -> None:
        if self.utterance == 0 or self.ended:
            self.count += 1
            self.utterance, self.ended = self.count, False
        self.buffer += data


async def _session(ws: WebSocket, avatar_id: str) -> None:
    state = ws.app.state.musetalk
    expected = state.settings.api_key
    await ws.accept()
    given = ws.query_params.get("key") or ws.headers.get("x-api-key") or ""
    if expected and not hmac.compare_digest(given.encode(), expected.encode()):
        await ws.send_text(json.dumps({"type": "error", "code": "unauthorized", "detail": "missing or wrong API key"}))
        await ws.close(4401)
        return
    if not state.runtime.store.exists(avatar_id):
        await ws.send_text(json.dumps({"type": "error", "code": "avatar_not_found", "detail": avatar_id}))
        await ws.close(4404)
        return
    fps = state.settings.fps
    avatar = await asyncio.to_thread(_Avatar, state.runtime.store.path(avatar_id), fps)
    h, w = avatar.frames[0].shape[:2]
    await ws.send_text(json.dumps({"type": "ready", "fps": fps, "width": w, "height": h,
                                   "sample_rate": DEFAULT_RATE, "header_bytes": HEADER.size}))
    session = _Session()
    sender = asyncio.create_task(_send_frames(ws, session, avatar, fps))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                session.audio(message["bytes"])
                continue
            kind = json.loads(message["text"]).get("type")
            if kind == "config":
                session.rate = int(json.loads(message["text"])["sample_rate"])
            elif kind == "end":
                session.ended = True
            elif kind == "interrupt":
                session.buffer.clear()
                session.cut = True
            elif kind == "ping":
                await ws.send_text(json.dumps({"type": "pong"}))
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()


async def _send_frames(ws: WebSocket, s: _Session, avatar: _Avatar, fps: float) -> None:
    start, index = time.perf_counter(), 0
    while True:
        await asyncio.sleep(max(0.0, start + index / fps - time.perf_counter()))
        # This frame's share of the timeline, cumulative rounding: no sample lost or repeated.
        share = int((index + 1) * s.rate // fps) - int(index * s.rate // fps)
        flags, utterance, pcm = 0, s.utterance, bytes(2 * share)
        events = []
        if s.cut and utterance:
            events.append({"type": "speech_ended", "utterance": utterance, "frame": index, "reason": "interrupt"})
            s.utterance, s.cut, utterance = 0, False, 0
        elif utterance:
            if s.buffer or s.ended:
                if s.started != utterance:
                    s.started = utterance
                    events.append({"type": "speech_started", "utterance": utterance, "frame": index})
                take = bytes(s.buffer[: 2 * share])
                del s.buffer[: 2 * share]
                pcm = take + bytes(2 * share - len(take))
                flags = SPEAKING
                if s.ended and not s.buffer:
                    flags |= LAST
                    events.append({"type": "speech_ended", "utterance": utterance, "frame": index, "reason": "end"})
                    s.utterance = 0
                elif len(take) < 2 * share:
                    flags |= UNDERRUN
            else:
                flags = SPEAKING | UNDERRUN
        level = float(np.sqrt(np.mean(np.frombuffer(pcm, "<i2").astype(np.float32) ** 2))) / 32768
        jpeg = await asyncio.to_thread(avatar.jpeg, index, level if flags & SPEAKING else 0.0)
        header = HEADER.pack(MAGIC, index, int(index * 1000 // fps), utterance, flags, 0, len(jpeg))
        await ws.send_bytes(header + jpeg + pcm)
        for event in events:
            await ws.send_text(json.dumps(event))
        index += 1
