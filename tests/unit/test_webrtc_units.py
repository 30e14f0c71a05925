"""WebRTC parts without a network: offer checks, the voice gate, the encoders, one broadcast's fan-out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from musetalk_server.errors import InvalidOffer
from musetalk_server.render.realtime.timeline import Plan
from musetalk_server.render.realtime.transport import OutputFrame
from musetalk_server.render.realtime.voice_gate import END, VoiceGate
from musetalk_server.webrtc.broadcast import Broadcast
from musetalk_server.webrtc.encoders import AUDIO_RATE, H264, OPUS_FRAME, VP8, AudioEncoder, VideoEncoder, VideoOptions
from musetalk_server.webrtc.offer import check_offer
from testkit.webrtc_peer import offer_sdp

OPTIONS = VideoOptions(crf=26, max_kbps=1500, keyframe_s=4.0, preset="superfast")
RATE = 48_000
CHUNK = RATE // 50


def chunk(level: float) -> bytes:
    """20 ms of a tone whose RMS is `level`."""
    t = np.arange(CHUNK) / RATE
    return (np.sqrt(2) * level * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def offers():
    return {"feeder": offer_sdp(), "viewer": offer_sdp(feeder=False)}


def video_offer(mime: str) -> str:
    """A viewer's offer whose video offers `mime` alone (AV1: a codec the server has no encoder for)."""
    async def make() -> str:
        pc = RTCPeerConnection()
        video = pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        codecs = RTCRtpReceiver.getCapabilities("video").codecs
        if mime == "video/AV1":
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp.replace("H264/90000", "AV1/90000").replace("VP8/90000", "AV1/90000")
        else:
            video.setCodecPreferences([c for c in codecs if c.mimeType == mime])
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_offers_pick_h264_and_fall_back_to_vp8(offers):
    feeder = check_offer(offers["feeder"], "feeder")
    assert (feeder.video_codec, feeder.sends_audio, feeder.data_channel) == (H264, True, True)
    viewer = check_offer(offers["viewer"], "viewer")
    assert (viewer.video_codec, viewer.sends_audio) == (H264, False)
    assert check_offer(video_offer("video/VP8"), "viewer").video_codec == VP8  # a browser without H.264
    with pytest.raises(InvalidOffer, match="neither H.264"):
        check_offer(video_offer("video/AV1"), "viewer")
    with pytest.raises(InvalidOffer, match="does not parse: AssertionError"):
        check_offer("v=0\r\nm=video abc", "viewer")
    with pytest.raises(InvalidOffer, match="sendrecv or recvonly"):  # a feeder's audio that only sends
        check_offer(offers["feeder"].replace("a=sendrecv", "a=sendonly"), "feeder")


def test_the_voice_gate_cuts_utterances_like_the_page():
    gate = VoiceGate(RATE)
    quiet = [gate.push(chunk(0.001)) for _ in range(20)]
    assert all(out == [] for out in quiet)  # silence never reaches the session
    opened = gate.push(chunk(0.1))
    assert len(opened) == 10 and opened[-1] == chunk(0.1)  # 200 ms: the loud chunk and the 180 ms before it
    assert gate.push(chunk(0.015)) == [chunk(0.015)]  # between the thresholds: still speech
    tail = [gate.push(chunk(0.001)) for _ in range(30)]
    ends = [i for i, out in enumerate(tail) if END in out]
    assert ends == [29]  # 600 ms of quiet (30 chunks) closes it, once
    assert gate.push(chunk(0.001)) == []
    gate.push(chunk(0.1))
    gate.reset()  # an interrupt: closed, the pre-roll dropped
    assert gate.push(chunk(0.001)) == [] and len(gate.push(chunk(0.1))) == 2


@pytest.mark.parametrize("codec", [H264, VP8])
def test_the_video_encoder_makes_key_frames_when_asked_on_the_frame_clock(codec):
    encoder = VideoEncoder(codec, 64, 48, 25, OPTIONS)
    frames = [np.full((72, 64), 16 + 8 * i, np.uint8) for i in range(6)]
    packets = [encoder.encode(f, 100 + i, keyframe=i == 4) for i, f in enumerate(frames)]
    assert [len(p) for p in packets] == [1] * 6  # no B-frames or look-ahead: one packet per frame, at once
    assert [p[0].is_keyframe for p in packets] == [True, False, False, False, True, False]
    assert [p[0].pts for p in packets] == list(range(100, 106)) and float(packets[0][0].time_base) == 1 / 25


def test_audio_packets_are_timed_from_the_session_clock():
    encoder = AudioEncoder(first_sample_48k=round(50 * AUDIO_RATE / 25))  # a viewer joining at frame 50
    packets = []
    for _ in range(25):  # one second at 16 kHz, 640 samples a frame
        packets += encoder.encode(bytes(1280), 16_000)
    assert [p.pts for p in packets][:3] == [96_000, 96_000 + OPUS_FRAME, 96_000 + 2 * OPUS_FRAME]
    assert len(packets) >= AUDIO_RATE // OPUS_FRAME - 2  # the resampler holds back a few samples


class _Metrics:
    """The Prometheus metrics a broadcast touches, as plain counters."""

    def __init__(self):
        self.values = {}

    def labels(self, *names):
        return _Metric(self, names)

    def __getattr__(self, name):
        return _Metric(self, (name,))


class _Metric:
    def __init__(self, owner, key):
        self.owner, self.key = owner, key

    def labels(self, *names):
        return _Metric(self.owner, self.key + names)

    def inc(self, n=1):
        self.owner.values[self.key] = self.owner.values.get(self.key, 0) + n

    def dec(self, n=1):
        self.inc(-n)

    def observe(self, v):
        self.inc(v)


def test_one_encoder_for_every_viewer_and_a_key_frame_for_each_new_one():
    metrics = _Metrics()
    broadcast = Broadcast(fps=25, options=OPTIONS, metrics=metrics)

    def plan(i):
        return Plan(index=i, pts_ms=i * 40, background=0, kind="idle", utterance=0, flags=0, audio=bytes(1280),
                    rate=16_000)

    async def run():
        first = broadcast.add(H264)
        for i in range(5):
            await broadcast.send_frame(plan(i), OutputFrame(i420=np.full((72, 64), 20 * i, np.uint8)))
        second = broadcast.add(H264)
        for i in range(5, 8):
            await broadcast.send_frame(plan(i), OutputFrame(i420=np.full((72, 64), 20 * i, np.uint8)))
        got = {}
        for name, viewer in (("first", first), ("second", second)):
            packets = []
            while not viewer.video._queue.empty():
                packets.append(viewer.video._queue.get_nowait())
            got[name] = packets
        encoders = broadcast.encoders
        broadcast.remove(first)
        broadcast.remove(second)
        await asyncio.sleep(0.1)
        return got, encoders

    got, encoders = asyncio.run(run())
    assert encoders == 1 and metrics.values[("webrtc_encoders", "H264")] == 0  # gone with the last viewer
    assert [p.is_keyframe for p in got["first"]] == [True, False, False, False, False, True, False, False]
    assert [p.is_keyframe for p in got["second"]] == [True, False, False]
    assert all(a is b for a, b in zip(got["first"][5:], got["second"], strict=True))  # the same packets
    assert metrics.values[("webrtc_keyframes",)] == 2
