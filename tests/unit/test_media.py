"""Decoders and encoders on real clips from ../shared/media."""

from fractions import Fraction

import av
import numpy as np
import pytest

from helpers import media
from musetalk_server.errors import EmptyMedia, TooLarge, UnsupportedMedia
from musetalk_server.media.audio import decode_audio, soundtrack
from musetalk_server.media.frame_timing import SAMPLE_RATE
from musetalk_server.media.mp4 import Mp4Writer
from musetalk_server.media.video import read_video
from testkit.mediatools import (
    first_frames,
    jpeg_with_orientation,
    read_mp4,
    silent_wav,
    transcode_audio,
    weave,
    with_display_rotation,
    write_offset_av,
    write_size_change,
    write_video,
)

AUDIO_FORMATS = [
    ("mp3", "libmp3lame", 44_100, "stereo", "mp3"),
    ("m4a", "aac", 44_100, "stereo", "mp4"),
    ("ogg", "libopus", 48_000, "stereo", "ogg"),
    ("flac", "flac", 22_050, "mono", "flac"),
    ("wav", "pcm_s24le", 24_000, "stereo", "wav"),
]


@pytest.mark.parametrize(("ext", "codec", "rate", "layout", "fmt"), AUDIO_FORMATS)
def test_decode_audio_formats_to_16k_mono(tmp_path, ext, codec, rate, layout, fmt):
    src = transcode_audio(media("mt_yongen.wav"), tmp_path / f"a.{ext}", codec, rate=rate, layout=layout,
                          fmt=fmt, seconds=2.0)
    audio = decode_audio(src)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Codec padding and priming may add a little; never a whole 50 ms.
    assert abs(audio.size / SAMPLE_RATE - 2.0) < 0.05
    assert 0.01 < float(np.abs(audio).max()) <= 1.0


def test_decode_audio_matches_known_durations():
    assert decode_audio(media("mt_eng.wav")).size == 60 * SAMPLE_RATE
    assert decode_audio(media("mt_yongen.wav")).size == 8 * SAMPLE_RATE  # 48 kHz stereo source


def test_decode_audio_rejects_non_audio(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(UnsupportedMedia):
        decode_audio(text)
    with pytest.raises(UnsupportedMedia, match="no audio stream"):
        decode_audio(media("mt_yongen.mp4"))


def test_decode_audio_empty_and_too_long(tmp_path):
    with pytest.raises(EmptyMedia):
        decode_audio(silent_wav(tmp_path / "empty.wav", 0.0))
    with pytest.raises(TooLarge):
        decode_audio(media("mt_eng.wav"), max_seconds=10)


def test_odd_frame_rate_is_resampled_to_output_clock():
    clip = read_video(media("vr_face1.mp4"), 25.0)
    assert clip.source_fps == pytest.approx(22.13, abs=0.01)
    assert clip.source_frames == 135
    # 135 frames at 22.131 fps last 6.1 s: floor(6.1 x 25) output frames, never a sped-up 135.
    assert len(clip.frames) == int(clip.duration_s * 25) == 152
    assert clip.size == (700, 700)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize(("video_start", "audio_start"), [(0.48, 0.0), (0.0, 0.32), (0.0, 0.0)])
def test_soundtrack_is_read_from_the_first_frames_instant(tmp_path, ext, video_start, audio_start):
    """Streams that start at different instants stay in sync: sample 0 of the soundtrack is what
    plays while frame 0 is shown. A burst at 1.0 s on the container's clock lands 1.0 s minus the
    first frame's time into the soundtrack, whichever stream starts first (the video late: its
    audio is cut; the audio late: silence in front)."""
    path = write_offset_av(tmp_path / f"offset.{ext}", video_start=video_start, audio_start=audio_start, burst_at=1.0)
    clip = read_video(path, 25.0)
    assert clip.start_s == pytest.approx(video_start, abs=1e-3)
    audio = soundtrack(path, len(clip.frames) / 25.0, start_s=clip.start_s)
    onset = np.flatnonzero(np.abs(audio) > 0.05)[0] / SAMPLE_RATE
    assert onset == pytest.approx(1.0 - video_start, abs=0.02)  # AAC's pre-echo blurs the edge a few ms
    assert len(audio) == round(len(clip.frames) / 25.0 * SAMPLE_RATE)
    # Without the alignment the burst would sit at 1.0 - audio_start: off by the streams' gap.


def test_still_image_is_one_frame(tmp_path):
    import cv2

    frame = first_frames(media("vr_face2.mp4"), 1)[0]
    for ext in ("png", "jpg"):
        path = tmp_path / f"face.{ext}"
        cv2.imwrite(str(path), frame)
        clip = read_video(path, 25.0)
        assert len(clip.frames) == 1 and clip.source_fps is None
        assert clip.frames[0].shape == frame.shape


# How a phone stores an upright picture (cv2's turn of it), and the mark that says so: the MP4's
# display rotation (counterclockwise degrees), the JPEG's EXIF Orientation.
PHONE_TURNS = [(-90, 6, "ROTATE_90_COUNTERCLOCKWISE"), (90, 8, "ROTATE_90_CLOCKWISE"), (180, 3, "ROTATE_180")]


@pytest.mark.parametrize(("degrees", "orientation", "stored"), PHONE_TURNS)
def test_a_phones_portrait_video_and_photo_come_out_upright(tmp_path, degrees, orientation, stored):
    import cv2

    upright = [cv2.resize(f, (256, 256))[:, 32:224] for f in first_frames(media("vr_face2.mp4"), 6)]  # 192x256
    on_its_side = [cv2.rotate(f, getattr(cv2, stored)) for f in upright]
    video = with_display_rotation(write_video(on_its_side, tmp_path / "phone.mp4", "libx264", 25, pix_fmt="yuv444p"),
                                  degrees)
    photo = jpeg_with_orientation(on_its_side[0], tmp_path / "phone.jpg", orientation)
    for path, want in ((video, upright), (photo, upright[:1])):
        clip = read_video(path, 25.0)
        assert clip.size == (192, 256) and len(clip.frames) == len(want)
        # The picture itself is turned, not only its size: within coding loss of the upright one.
        assert max(np.abs(got.astype(int) - w).mean() for got, w in zip(clip.frames, want, strict=True)) < 3


# Each EXIF Orientation's stored picture, made from the upright one (the tag says how to undo it).
MIRRORED_STORAGE = {
    2: lambda image, cv2: cv2.flip(image, 1),
    4: lambda image, cv2: cv2.flip(image, 0),
    5: lambda image, cv2: cv2.transpose(image),
    7: lambda image, cv2: cv2.flip(cv2.transpose(image), -1),
}


@pytest.mark.parametrize("orientation", sorted(MIRRORED_STORAGE))
def test_a_mirrored_photo_comes_out_as_shown(tmp_path, orientation):
    """A selfie stored mirrored (EXIF 2, 4, 5, 7): before, 2 came out upside down, 4 mirrored and
    upside down, 5 and 7 mirrored."""
    import cv2

    upright = cv2.resize(first_frames(media("vr_face2.mp4"), 1)[0], (256, 256))[:, 32:224]  # 192x256
    photo = jpeg_with_orientation(MIRRORED_STORAGE[orientation](upright, cv2), tmp_path / "selfie.jpg", orientation)
    clip = read_video(photo, 25.0)
    assert clip.size == (192, 256)
    assert np.abs(clip.frames[0].astype(int) - upright).mean() < 3


def combing(frame: np.ndarray) -> float:
    """How unlike its neighbours each line is, against lines two apart: under 1 for a picture,
    well over 1 where moving edges comb (each field from another instant)."""
    g = frame.astype(float).mean(axis=2)
    return float(np.abs(g[1:] - g[:-1]).mean() / np.abs(g[2:] - g[:-2]).mean())


def test_an_interlaced_video_comes_out_deinterlaced(tmp_path):
    """A camera panning across a face at 50 fields a second, coded interlaced: before, every frame
    showed its two fields' instants woven into combs."""
    import cv2

    face = cv2.resize(first_frames(media("vr_face2.mp4"), 1)[0], (256, 256))
    pictures = [np.roll(face, 8 * i, axis=1) for i in range(40)]  # 8 px a field
    path = write_video(weave(pictures), tmp_path / "1080i.mp4", "libx264", 25, interlaced=True)
    with av.open(str(path)) as stored:
        first = next(stored.decode(video=0))
        assert first.interlaced_frame and combing(first.to_ndarray(format="bgr24")) > 2
    clip = read_video(path, 25.0)
    assert len(clip.frames) == 20 and clip.source_frames == 20
    assert max(combing(f) for f in clip.frames) < 1
    # Each frame is one of its fields' instants (which one the field order says), within the
    # rebuilt lines' loss (a woven frame is 7.5 grey levels from the nearer).
    for i, frame in enumerate(clip.frames):
        assert min(np.abs(frame.astype(int) - p).mean() for p in pictures[2 * i: 2 * i + 2]) < 6, i
    # A picture too small for the filter (bwdif wants a few lines and columns) is shown as stored.
    tiny = write_video([np.full((4, 4, 3), v, np.uint8) for v in range(0, 240, 40)], tmp_path / "4x4.mp4",
                       "libx264", 25, interlaced=True)
    assert len(read_video(tiny, 25.0).frames) == 6


def test_a_size_change_mid_stream_keeps_the_longest_stretch_at_one_size(tmp_path):
    import cv2

    faces = first_frames(media("vr_face2.mp4"), 30)
    path = write_size_change(tmp_path / "resized.ts", [cv2.resize(f, (256, 256)) for f in faces[:12]],
                             [cv2.resize(f, (192, 256)) for f in faces[12:]])
    clip = read_video(path, 25.0)
    assert {f.shape for f in clip.frames} == {(256, 192, 3)}  # every frame one size: the later, longer stretch
    assert clip.other_size_frames == 12 and clip.source_frames == 18 and len(clip.frames) == 18
    # It starts where that stretch is shown, so its soundtrack is read from there.
    with av.open(str(path)) as container:
        first_narrow = next(f.time for f in container.decode(video=0) if f.width == 192)
    assert clip.start_s == pytest.approx(first_narrow)
    assert clip.source_fps == pytest.approx(25.0)


def test_a_degenerate_display_matrix_leaves_the_picture_as_stored(tmp_path):
    import cv2

    stored = [cv2.resize(f, (256, 256))[:, 32:224] for f in first_frames(media("vr_face2.mp4"), 2)]
    clip = read_video(with_display_rotation(write_video(stored, tmp_path / "zeros.mp4", "libx264", 25), None), 25.0)
    assert clip.size == (192, 256)  # PyAV reads an angle of -2**31 there; it once turned the picture


@pytest.mark.parametrize(("codec", "fmt", "pixel_aspect"), [("libx264", "mp4", Fraction(4, 3)),
                                                          ("mpeg4", "matroska", Fraction(3, 4))])
def test_an_anamorphic_video_comes_out_with_square_pixels(tmp_path, codec, fmt, pixel_aspect):
    import cv2

    faces = [cv2.resize(f, (256, 256)) for f in first_frames(media("vr_face2.mp4"), 3)]
    stored = [cv2.resize(f, (round(256 / pixel_aspect), 256), interpolation=cv2.INTER_AREA) for f in faces]
    clip = read_video(write_video(stored, tmp_path / f"anamorphic.{fmt}", codec, 25, fmt, pixel_aspect=pixel_aspect),
                      25.0)
    # Square pixels, by shrinking the longer side of the shown picture (a header never grows a frame).
    side = min(stored[0].shape[:2])
    assert clip.size == (side, side)
    shown = [cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in faces]
    assert max(np.abs(got.astype(int) - want).mean() for got, want in zip(clip.frames, shown, strict=True)) < 6


def test_a_sample_aspect_ratio_past_any_real_one_is_not_honoured(tmp_path):
    import cv2

    stored = [cv2.resize(f, (128, 96)) for f in first_frames(media("vr_face2.mp4"), 2)]
    clip = read_video(write_video(stored, tmp_path / "wide.mp4", "libx264", 25, pixel_aspect=Fraction(1000, 1)), 25.0)
    assert clip.size == (128, 96)  # as stored: not 2 pixels high, nor 128,000 wide


@pytest.mark.parametrize(("ext", "codec", "fmt"), [("mov", "libx264", "mov"), ("webm", "libvpx-vp9", "webm"),
                                                    ("mkv", "mpeg4", "matroska")])
def test_containers_and_codecs(tmp_path, ext, codec, fmt):
    frames = first_frames(media("vr_face2.mp4"), 10)
    path = write_video([cv2_small(f) for f in frames], tmp_path / f"v.{ext}", codec, 25, fmt)
    clip = read_video(path, 25.0)
    assert len(clip.frames) == 10 and clip.size == (256, 256)


def cv2_small(frame):
    import cv2

    return cv2.resize(frame, (256, 256))


def test_truncated_and_fake_videos_are_rejected(tmp_path):
    data = media("vr_face2.mp4").read_bytes()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    fake = tmp_path / "fake.mp4"
    fake.write_text("hello")
    for path in (truncated, fake):
        with pytest.raises(UnsupportedMedia) as err:
            read_video(path, 25.0)
        assert str(tmp_path) not in err.value.detail  # no server paths in client-facing text


def test_big_frames_are_scaled_down_keeping_aspect():
    clip = read_video(media("lp_s18.mp4"), 25.0, max_side=640, max_seconds=60)
    assert clip.size == (640, 360)


def test_mp4_writer_muxes_h264_and_aac(tmp_path):
    frames = first_frames(media("vr_face2.mp4"), 5)
    audio = decode_audio(media("vr_audio1.wav"), rate=48_000)[: 48_000 * 2]
    out = tmp_path / "o.mp4"
    writer = Mp4Writer(out, fps=25, width=844, height=844, audio=audio, audio_rate=48_000)
    for i in range(50):
        writer.write(frames[i % 5])
    writer.close()
    facts = read_mp4(out)
    assert (facts.video_codec, facts.pix_fmt, facts.frames, facts.fps) == ("h264", "yuv420p", 50, 25.0)
    assert facts.audio_codec == "aac"
    assert abs(facts.audio_seconds - 2.0) < 0.05


def bt601_to_bgr(planes: np.ndarray) -> np.ndarray:
    """A yuv420p picture (PyAV's one-array layout) as float BGR, by the BT.601 limited-range
    formulas, exactly: what an accurate player shows."""
    h = planes.shape[0] * 2 // 3
    w = planes.shape[1]
    y = (planes[:h].astype(float) - 16) * 255 / 219
    u, v = (planes[h + k * h // 4: h + (k + 1) * h // 4].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
            for k in (0, 1))
    cb, cr = (u.astype(float) - 128) * 255 / 224, (v.astype(float) - 128) * 255 / 224
    return np.stack([y + 1.772 * cb, y - 0.344136 * cb - 0.714136 * cr, y + 1.402 * cr], axis=-1)


def test_an_mp4_shows_the_colours_it_was_given(tmp_path):
    """Before, FFmpeg's default conversion made greys green (chroma 127) and every frame 1.5-2
    levels darker than the same frame as MJPEG; the file carried no colour tags either."""
    grey = np.full((64, 64, 3), 118, np.uint8)
    face = first_frames(media("lp_d12.mp4"), 1)[0]
    for picture in (grey, face):
        out = tmp_path / "colours.mp4"
        h, w = picture.shape[:2]
        writer = Mp4Writer(out, fps=25, width=w, height=h, audio=np.zeros(4800, np.float32), audio_rate=48_000)
        for _ in range(3):
            writer.write(picture)
        writer.close()
        with av.open(str(out)) as c:
            context = c.streams.video[0].codec_context
            assert (context.colorspace, context.color_range) == (6, 1)  # SMPTE 170M (BT.601), MPEG range
            planes = next(c.decode(video=0)).to_ndarray(format="yuv420p")
        shown = bt601_to_bgr(planes)
        assert np.abs((shown - picture).reshape(-1, 3).mean(axis=0)).max() < 0.5  # no cast, no shift
        if picture is grey:
            assert set(np.unique(planes[h:])) == {128}  # neutral chroma


def test_a_blocks_chroma_is_its_average_colour():
    """One red and three blue pixels make a bluish purple, as JPEG and FFmpeg have it, not red."""
    from musetalk_server.media.mp4 import bgr_to_i420

    block = np.zeros((2, 2, 3), np.uint8)
    block[:] = (255, 0, 0)
    block[0, 0] = (0, 0, 255)
    planes = bgr_to_i420(np.tile(block, (2, 2, 1)))  # 4x4: four such blocks
    assert set(planes[4:5].ravel()) == {203} and set(planes[5:6].ravel()) == {142}  # FFmpeg's: 202, 142
