"""The real-time pieces without a socket: frame shares, resampling, the lite frame session."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from musetalk_server.errors import InvalidInput
from musetalk_server.media.frame_timing import pingpong_index
from musetalk_server.render.realtime.protocol import (
    HEADER_BYTES,
    pack_frame,
    parse_text,
    rate_from_query,
    unpack_frame,
)
from musetalk_server.render.realtime.resample import StreamResampler
from musetalk_server.render.realtime.timeline import Timeline


def timeline(**kw) -> Timeline:
    return Timeline(fps=kw.pop("fps", 25.0), backgrounds=7, lookahead_s=0.1, max_buffer_s=30, max_utterance_s=600)


@pytest.mark.parametrize(("rate", "fps"), [(16000, 25.0), (11025, 30.0), (22050, 29.97), (8000, 24.0)])
def test_shares_add_up_with_cumulative_rounding(rate, fps):
    t = Timeline(fps=fps, backgrounds=7, lookahead_s=0.1, max_buffer_s=30, max_utterance_s=600)
    t.configure(rate)
    shares = [t.share(g) for g in range(3000)]
    assert max(shares) - min(shares) <= 1
    total = sum(shares)
    assert total == int(3000 * rate / t._fps)  # floor(3000 R / F): nothing lost or repeated


def test_a_config_names_the_first_frame_at_its_rate_and_a_replan_keeps_the_old_one():
    t = Timeline(fps=25.0, backgrounds=7, lookahead_s=0.0, max_buffer_s=30, max_utterance_s=600, rate=48000)
    assert [len(t.plan().audio) for _ in range(3)] == [2 * 1920] * 3
    assert t.configure(22050) == 3 and t.configure(16000) == 3  # a second config before frame 3: the last wins
    planned = t.plan()  # frame 3, idle, at 16 kHz
    assert t.configure(8000) == 4  # read while frame 3 waits for its tick
    t.add_audio(bytes(2 * 320), 0.0)
    t.end()
    assert t.starts_now()
    again = t.replan(planned)  # frame 3 decided again, now speaking: still at the rate it had
    assert (again.index, again.kind, len(again.audio)) == (3, "speech", 2 * 640)
    assert [len(t.plan().audio) for _ in range(2)] == [2 * 320] * 2


@pytest.mark.parametrize(("text", "detail"), [
    ('{"type": "config", "samplerate": 48000}', "unknown key 'samplerate' in the 'config' message; it takes type, sample_rate"),
    ('{"type": "end", "now": true, "x": 1}', "unknown keys 'now', 'x' in the 'end' message; it takes type"),
    ('{"type": "config", "sample_rate": 48000.0}', "sample_rate must be an integer from 8000 to 48000, got 48000.0"),
])
def test_control_messages_take_only_their_own_keys(text, detail):
    with pytest.raises(InvalidInput) as e:
        parse_text(text)
    assert e.value.detail == detail


def test_the_query_rate_is_checked_as_config_is():
    assert (rate_from_query(None), rate_from_query("44100")) == (16000, 44100)
    assert parse_text('{"type": "config", "sample_rate": 44100}').sample_rate == 44100
    for bad in ("7999", "48001", "48k", " 48000", "48_000", "٤٨٠٠٠"):
        with pytest.raises(InvalidInput, match="the sample_rate query parameter must be an integer from 8000 to 48000"):
            rate_from_query(bad)


def test_header_is_24_bytes_little_endian():
    m = pack_frame(7, 280, 3, 5, b"\xff\xd8jpeg\xff\xd9", b"\x01\x00" * 4)
    assert HEADER_BYTES == 24 and m[:24] == b"MTF1" + (7).to_bytes(4, "little") + (280).to_bytes(4, "little") + \
        (3).to_bytes(4, "little") + (5).to_bytes(2, "little") + bytes(2) + (8).to_bytes(4, "little")
    head, jpeg, audio = unpack_frame(m)
    assert (head.index, head.pts_ms, head.utterance, head.flags, jpeg, audio) == (7, 280, 3, 5, m[24:32], m[32:])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampling_does_not_depend_on_chunking(rate):
    x = np.random.default_rng(0).standard_normal(rate).astype(np.float32)
    whole = StreamResampler(rate).push(x, final=True)
    r = StreamResampler(rate)
    cuts = [0, 1, 7, 333, 1000, rate // 2, rate]
    parts = [r.push(x[a:b]) for a, b in itertools.pairwise(cuts)] + [r.push(np.zeros(0, np.float32), final=True)]
    assert np.array_equal(np.concatenate(parts), whole) and abs(len(whole) - 16000) <= 1
    t = np.arange(len(whole)) * rate / 16000
    assert np.allclose(whole[:-1], np.interp(t, np.arange(rate), x)[:-1], atol=1e-5)


def test_lite_session_given_the_whole_utterance_renders_the_batch_frames(lite_renderer, speech_2s):
    frames = lite_renderer.session(25.0)
    batch = list(lite_renderer.render(speech_2s, 25.0))
    n = len(lite_renderer.frames)
    live = [frames.speech_frame(1, i, pingpong_index(i, n), speech_2s, True) for i in range(len(batch))]
    assert len(batch) == 50 and all(np.array_equal(a, b) for a, b in zip(batch, live, strict=True))


def test_lite_session_fed_just_in_time_speaks_like_batch(lite_renderer, speech_2s):
    """A feed only just ahead of the clock (a TTS at real time): each frame gets its own audio
    and none of its look-ahead. Frames computed ahead of their audio used to be kept as silence,
    so nearly every frame was shut; now each opens as in batch, less the look-ahead's smoothing.
    Read back from the pictures with the face landmarks."""
    from musetalk_server.engines.lite.geometry import mouth_aperture
    from musetalk_server.face.landmarks import detect_video

    fps, n, share = 25.0, len(lite_renderer.frames), 640
    session = lite_renderer.session(fps)
    live = [session.speech_frame(1, i, pingpong_index(i, n), speech_2s[:(i + 1) * share], False) for i in range(50)]
    batch = list(lite_renderer.render(speech_2s, fps))
    opened, filmed = (np.nan_to_num(mouth_aperture(detect_video(f)[0])) for f in (live, batch))
    assert np.corrcoef(opened, filmed)[0, 1] > 0.8
    assert opened.mean() > 0.7 * filmed.mean()


def test_lite_session_stays_shut_through_room_noise_before_the_first_word(lite_renderer, speech_2s):
    """Two seconds of a recording's room noise (mt_eng.wav's second second, -53 to -56 dB, twice;
    its first word comes at 3 s), then speech, fed in real time with the look-ahead: the noise teaches the speech
    level nothing, so the mouth stays shut through it as in batch, and opens for the speech."""
    from helpers import media
    from musetalk_server.engines.lite.geometry import mouth_aperture
    from musetalk_server.face.landmarks import detect_video
    from musetalk_server.media.audio import decode_audio

    noise = decode_audio(media("mt_eng.wav"))[16000:32000]
    audio = np.r_[noise, noise, speech_2s[:16000]].astype(np.float32)
    fps, n, share = 25.0, len(lite_renderer.frames), 640
    session = lite_renderer.session(fps)
    live = [session.speech_frame(1, i, pingpong_index(i, n), audio[:(i + 4) * share], False) for i in range(75)]
    opened = np.nan_to_num(mouth_aperture(detect_video(live)[0]))
    assert opened[:50].max() < 0.03, opened[:50]
    assert opened[50:].max() > 0.05


def test_lite_idle_frames_are_still_and_shut(lite_renderer):
    frames = lite_renderer.session(25.0)
    again = lite_renderer.session(25.0)
    sample = range(0, len(lite_renderer.frames), 5)
    assert all(np.array_equal(frames.idle_frame(b), again.idle_frame(b)) for b in sample)


@pytest.fixture(scope="module")
def lite_renderer(tmp_path_factory):
    from helpers import media
    from musetalk_server.engines.base import AvatarFrames, LoadedAvatar
    from musetalk_server.engines.lite import LiteEngine
    from musetalk_server.face.landmarks import detect_video
    from testkit.mediatools import first_frames

    frames = first_frames(media("lp_d11.mp4"), 30)
    points, _ = detect_video(frames)
    path = tmp_path_factory.mktemp("lite-rt") / "a"
    engine = LiteEngine()
    engine.prepare(AvatarFrames(frames, points, 25.0), 0, path / "engine")
    return engine.open(LoadedAvatar("a", path, {"fps": 25.0}, frames, points, path / "engine"))


@pytest.fixture(scope="module")
def speech_2s():
    from helpers import media
    from musetalk_server.media.audio import decode_audio

    return decode_audio(media("vr_audio1.wav"))[:32000]
