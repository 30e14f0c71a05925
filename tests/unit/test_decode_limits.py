"""Limits hold while decoding: refused from the header when it says so, else as soon as decoding
crosses them, without holding the whole file in memory. And non-finite samples never pass."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from musetalk_server.errors import InvalidSamples, TooLarge
from musetalk_server.media.audio import check_finite, decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE
from musetalk_server.media.video import read_video
from testkit.hostile_media import HUGE_SIDE, MILLION, SIX_HOURS_S, float_wav, long_wav, png_claiming, y4m

MAX_AUDIO_S = 600.0
FLOAT32 = 4  # bytes per decoded sample


def _peak_bytes(fn) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as e:  # the caller asserts on it
        raised = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


def test_six_hour_wav_is_refused_from_its_header_without_decoding(tmp_path):
    # Really six hours of 16 kHz 16-bit samples (691 MB, sparse on disk): 1.4 GB once decoded.
    path = long_wav(tmp_path / "six_hours.wav", SIX_HOURS_S, rate=SAMPLE_RATE)
    raised, peak = _peak_bytes(lambda: decode_audio(path, max_seconds=MAX_AUDIO_S))
    assert isinstance(raised, TooLarge)
    assert raised.detail == "audio declares 21600 s; the limit is 600 s"
    assert peak < 1 << 20  # nothing decoded


def test_audio_past_the_limit_stops_decoding_at_the_limit(tmp_path):
    # 610 s declares little enough to pass the header check (estimates get slack), so it is
    # the decoder that stops, right after 600 s: memory stays near the limit's worth of samples.
    path = long_wav(tmp_path / "long.wav", 610, rate=SAMPLE_RATE)
    raised, peak = _peak_bytes(lambda: decode_audio(path, max_seconds=MAX_AUDIO_S))
    assert isinstance(raised, TooLarge)
    assert raised.detail == "audio is longer than the limit of 600 s"
    at_limit = MAX_AUDIO_S * SAMPLE_RATE * FLOAT32
    assert at_limit < peak < 1.2 * at_limit


def test_audio_at_the_limit_decodes(tmp_path):
    path = long_wav(tmp_path / "ten_minutes.wav", MAX_AUDIO_S, rate=8_000)
    assert decode_audio(path, max_seconds=MAX_AUDIO_S).size == MAX_AUDIO_S * SAMPLE_RATE


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_named_with_their_time(tmp_path, value):
    samples = np.zeros(2 * SAMPLE_RATE, np.float32)
    samples[SAMPLE_RATE + SAMPLE_RATE // 2] = value
    path = float_wav(tmp_path / "bad.wav", samples)
    for rate in (SAMPLE_RATE, 48_000):  # the engine's decode and the MP4's own track
        with pytest.raises(InvalidSamples) as e:
            decode_audio(path, rate=rate)
        assert e.value.status == 422 and e.value.code == "unsupported_media"
        # The resampler's filter spreads a bad sample over a few neighbours, hence the tolerance.
        m = re.fullmatch(r"the audio holds non-finite sample values \(NaN or infinity\), first at ([0-9.]+) s; "
                         "re-export it as ordinary PCM", e.value.detail)
        assert m and abs(float(m[1]) - 1.5) < 0.01


def test_check_finite_is_the_same_check_for_any_caller():
    ok = np.linspace(-1, 1, 100, dtype=np.float32)
    assert check_finite(ok) is ok
    with pytest.raises(InvalidSamples, match=r"non-finite sample values \(NaN or infinity\), first at 0.250 s"):
        check_finite(np.array([0.0, np.nan], np.float32), start=3_999)


def test_an_8k_frame_is_refused_before_decoding(tmp_path):
    for path in (y4m(tmp_path / "huge.y4m", width=HUGE_SIDE, height=HUGE_SIDE, frames=0),
                 png_claiming(tmp_path / "huge.png", HUGE_SIDE, HUGE_SIDE)):
        raised, peak = _peak_bytes(lambda path=path: read_video(path, 25.0, max_pixels=3840 * 2160))
        assert isinstance(raised, TooLarge)
        assert raised.detail == "video frames are 8192x8192 (67108864 pixels); the limit is 8294400 pixels"
        assert peak < 1 << 20


def test_a_million_frames_stop_at_the_frame_cap(tmp_path):
    # One second at a million frames per second: no duration limit applies, the frame cap does.
    path = y4m(tmp_path / "million.y4m", width=2, height=2, frames=MILLION, rate=f"{MILLION}:1")
    with pytest.raises(TooLarge, match="more than the limit of 500 frames"):
        read_video(path, 25.0, max_seconds=120, max_frames=500)


def test_video_past_its_seconds_stops_while_decoding(tmp_path):
    path = y4m(tmp_path / "long.y4m", width=16, height=16, frames=300, rate="25:1")  # 12 s
    with pytest.raises(TooLarge, match="declares 12 s; the limit is 5 s"):
        read_video(path, 25.0, max_seconds=5)
    # Within the header's slack, the decoder stops it instead.
    with pytest.raises(TooLarge, match="longer than the limit of 11.5 s"):
        read_video(path, 25.0, max_seconds=11.5)


def test_a_bare_stream_is_judged_by_its_decoded_length_not_ffmpegs_guess(tmp_path):
    """ADTS AAC (and an MP3 without a Xing header) stores no length: FFmpeg guesses one from the
    first frames' bitrate. 9 s that open with a second of silence were guessed at 38 s, and an
    upload well under the limit was refused as over it."""
    import av

    from helpers import media
    from testkit.mediatools import transcode_audio, write_wav

    speech = decode_audio(media("mt_eng.wav"), rate=44_100)[:8 * 44_100]
    wav = write_wav(tmp_path / "pause_first.wav", np.concatenate([np.zeros(44_100, np.float32), speech]), 44_100)
    path = transcode_audio(wav, tmp_path / "pause_first.aac", "aac", rate=44_100, fmt="adts")
    with av.open(str(path)) as guessed:
        assert guessed.duration / av.time_base > 30  # what a header check would have refused
    assert decode_audio(path, max_seconds=20).size == pytest.approx(9 * SAMPLE_RATE, abs=0.05 * SAMPLE_RATE)
    with pytest.raises(TooLarge, match="longer than the limit of 5 s"):  # the decoder still holds the limit
        decode_audio(path, max_seconds=5)


def test_a_phones_photo_may_be_bigger_than_a_video_frame(tmp_path):
    """Every phone's photo is 12 MP (4032x3024), over a 4K video frame's 8.3 MP: a still image has
    MUSETALK_MAX_IMAGE_PIXELS, its one frame decoded once; a video's frames keep the video limit."""
    import cv2

    photo = tmp_path / "phone.jpg"
    cv2.imwrite(str(photo), np.full((3024, 4032, 3), 128, np.uint8))
    limits = {"max_pixels": 3840 * 2160, "max_photo_pixels": 8192 * 6144, "max_side": 1920}
    clip = read_video(photo, 25.0, **limits)
    assert clip.size == (1920, 1440) and len(clip.frames) == 1
    # A HEIF still (here AVIF, as Pillow writes it; an iPhone's HEIC is the same container) too,
    # which FFmpeg reads with its MP4 demuxer.
    from PIL import Image

    heif = tmp_path / "phone.avif"
    Image.fromarray(np.full((3024, 4032, 3), 128, np.uint8)).save(heif)
    assert read_video(heif, 25.0, **limits).size == (1920, 1440)
    with pytest.raises(TooLarge, match=r"4032x3024 \(12192768 pixels\); the limit is 8294400 pixels"):
        read_video(photo, 25.0, max_pixels=3840 * 2160)  # without the allowance, as before
    # Two such pictures in one file are a video: its frames have the video's limit.
    from testkit.mediatools import write_video

    video = write_video([np.full((3024, 4032, 3), 128, np.uint8)] * 2, tmp_path / "big.avi", "mjpeg", 25,
                        pix_fmt="yuvj420p")
    with pytest.raises(TooLarge, match="4032x3024"):
        read_video(video, 25.0, **limits)
    with pytest.raises(TooLarge, match=r"8192x8192 \(67108864 pixels\); the limit is 50331648 pixels"):
        read_video(png_claiming(tmp_path / "huge.png", HUGE_SIDE, HUGE_SIDE), 25.0, **limits)
