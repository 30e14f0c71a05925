"""The embedded default, for real: no fake engine, the lite engine chosen by `auto` on a CPU box."""

from __future__ import annotations

import cv2
import httpx
import numpy as np
import pytest

from helpers import LiveServer, media
from musetalk_server.api import create_app
from musetalk_server.avatars.store import AvatarStore, read_frame
from musetalk_server.config import Settings
from musetalk_server.engines.lite.geometry import mouth_aperture
from musetalk_server.face.landmarks import LIPS_OUTER, detect_video
from musetalk_server.media.audio import decode_audio
from musetalk_server.media.frame_timing import SAMPLE_RATE, pingpong_index
from servers import post_audio, preprocess
from testkit.mediatools import parse_mjpeg, read_mp4, write_still


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    results = tmp_path_factory.mktemp("lite") / "results"
    app = create_app(Settings(_env_file=None, result_dir=results, engine="auto"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        r = preprocess(client, "face2", media("vr_face2.mp4"))
        assert r.status_code == 200, r.text
        yield client, AvatarStore(results / "avatars")


def test_auto_picks_lite_without_gpu_or_weights(lite):
    client, _ = lite
    body = client.get("/health").json()
    assert body["engine"] == "lite" and body["models"] == {"loaded": True, "device": "cpu"}


def test_stream_changes_the_mouth_and_nothing_far_from_it(lite):
    client, store = lite
    r = post_audio(client, "/inference/stream/face2", media("vr_audio1.wav"))
    parts, closed = parse_mjpeg(r.content)
    assert r.status_code == 200 and closed and len(parts) == 125
    avatar = store.load("face2")
    mouth_diffs, far_diffs = [], []
    for i in range(0, 125, 5):
        out = cv2.imdecode(np.frombuffer(parts[i].body, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
        k = pingpong_index(i, len(avatar.frames))
        src = read_frame(avatar.path, k).astype(np.float32)
        lips = avatar.landmarks[k][list(LIPS_OUTER)]
        (x0, y0), (x1, y1) = lips.min(0).astype(int), lips.max(0).astype(int)
        mouth_diffs.append(np.abs(out[y0:y1, x0:x1] - src[y0:y1, x0:x1]).mean())
        far_diffs.append(np.abs(out[:150] - src[:150]).mean())  # the top of the frame: hair, background
    assert max(far_diffs) < 3.0, "pixels far from the mouth changed beyond JPEG noise"
    assert np.mean(mouth_diffs) > 3 * np.mean(far_diffs), "the mouth was not re-rendered"


def test_batch_mp4_with_the_lite_engine(lite, tmp_path):
    client, _ = lite
    r = post_audio(client, "/inference/batch/face2", media("st_RD_Radio31_000.wav"))
    assert r.status_code == 200
    out = tmp_path / "o.mp4"
    out.write_bytes(r.content)
    facts = read_mp4(out)
    assert facts.frames == 200 and facts.audio_codec == "aac" and abs(facts.audio_seconds - 8.0) < 0.06


def test_avatar_from_another_engine_is_a_clear_409(lite, tmp_path):
    client, store = lite
    manifest_path = store.path("face2") / "manifest.json"
    import json
    import shutil

    shutil.copytree(store.path("face2"), store.root / "alien")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(avatar_id="alien", engine="musetalk")
    (store.root / "alien" / "manifest.json").write_text(json.dumps(manifest))
    r = post_audio(client, "/inference/stream/alien", media("vr_audio1.wav"))
    assert r.status_code == 409 and r.json()["code"] == "avatar_engine_mismatch"
    assert "musetalk" in r.json()["detail"] and "lite" in r.json()["detail"]


def test_a_filmed_talking_face_is_animated_from_its_own_mouths(lite):
    client, _ = lite
    animation = client.get("/avatars/face2").json()["info"]["engine_info"]["animation"]
    assert animation == {"status": "filmed", "open": "filmed", "shut": "filmed"}


def speech_then_silence(tmp_path, speech_s: float = 3.0, silence_s: float = 2.0):
    """A wav of `speech_s` of speech and `silence_s` of silence, and its per-frame level (dB) at 25 fps."""
    import wave

    speech = decode_audio(media("vr_audio1.wav"))[: int(speech_s * SAMPLE_RATE)]
    audio = np.r_[speech, np.zeros(int(silence_s * SAMPLE_RATE), np.float32)]
    path = tmp_path / "speech_then_silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    per_frame = audio[: len(audio) // 640 * 640].reshape(-1, 640)  # 40 ms frames
    return path, 10 * np.log10(np.mean(per_frame.astype(np.float64) ** 2, axis=1) + 1e-10)


@pytest.mark.parametrize(("clip", "frame", "ext"), [("lp_d11", 34, "png"), ("vr_face2", 93, "jpg")])
def test_a_photo_speaks_and_says_its_mouth_is_made(lite, tmp_path, clip, frame, ext):
    """The README's promise: a still image (png, jpg) is a one-frame avatar. Its lips are shut in
    the photo; driven by speech then silence, the mouth read back from the stream opens with the
    speech and shuts in the silence, and the avatar's info says its openings are made."""
    client, _ = lite
    photo = tmp_path / f"photo.{ext}"
    write_still(media(f"{clip}.mp4"), photo, frame)
    r = preprocess(client, f"photo-{ext}", photo)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == "Avatar processed successfully" and body["info"]["frames"] == 1
    animation = body["info"]["engine_info"]["animation"]
    assert animation["status"] == "synthesised" and animation["open"] == "synthesised", animation
    assert "never opens" in animation["reason"]
    assert client.get(f"/avatars/photo-{ext}").json()["info"]["engine_info"]["animation"] == animation

    wav, level_db = speech_then_silence(tmp_path)
    r = post_audio(client, f"/inference/stream/photo-{ext}", wav)
    parts, closed = parse_mjpeg(r.content)
    assert r.status_code == 200 and closed and len(parts) == len(level_db) == 125
    frames = [cv2.imdecode(np.frombuffer(p.body, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    points, found = detect_video(frames)
    assert found.all()
    aperture = mouth_aperture(points)
    speaking, silent = slice(0, 75), slice(80, 125)
    assert aperture[speaking].max() > 0.08 and aperture[speaking].std() > 0.01, aperture[speaking]
    assert (aperture[silent] < 0.03).all(), aperture[silent]
    assert np.corrcoef(aperture, level_db)[0, 1] >= 0.5


def test_a_phones_portrait_video_is_preprocessed_upright(lite, tmp_path):
    """A phone stores a portrait video on its side and marks it to be turned (the display matrix):
    preprocess turns it as players do, so the avatar is portrait, its talking mouth is measured as
    filmed (read sideways it looked shut, and got a made one), and its frames stream upright."""
    from testkit.mediatools import first_frames, with_display_rotation, write_video

    upright = [f[:, 106:738] for f in first_frames(media("vr_face2.mp4"), 75)]  # 632x844, the news reader talking
    on_its_side = [cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE) for f in upright]
    video = with_display_rotation(write_video(on_its_side, tmp_path / "portrait.mp4", "libx264", 25), -90)
    r = preprocess(client := lite[0], "portrait", video)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info["size"] == [632, 844] and info["width"] == 632 and info["height"] == 844
    assert info["engine_info"]["animation"]["status"] == "filmed", info["engine_info"]["animation"]
    preview = cv2.imdecode(np.frombuffer(client.get("/avatars/portrait/preview.jpg").content, np.uint8),
                           cv2.IMREAD_COLOR)
    assert preview.shape[:2] == (844, 632)
    assert np.abs(preview.astype(int) - upright[0]).mean() < 4  # the picture itself, not just its size


def test_a_recording_that_starts_and_ends_black_is_cut_to_the_face(lite, tmp_path):
    """A browser's camera warms up for a second of black, and a clip may fade out: the frames
    before the first face and after the last leave the avatar (they once looped through it, a
    black second on every pass, or failed it with 422 when they were over a fifth of it)."""
    from testkit.mediatools import first_frames, write_video

    face = [cv2.resize(f, (320, 320)) for f in first_frames(media("vr_face2.mp4"), 50)]
    black = np.zeros_like(face[0])
    video = write_video([black] * 20 + face + [black] * 10, tmp_path / "warm_up.mp4", "libx264", 25)
    r = preprocess(client := lite[0], "warm-up", video)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info["frames"] == 50 and info["face"]["cut_frames"] == {"start": 20, "end": 10}
    assert info["face"]["missing_frames"] == 0
    preview = cv2.imdecode(np.frombuffer(client.get("/avatars/warm-up/preview.jpg").content, np.uint8),
                           cv2.IMREAD_COLOR)
    assert np.abs(preview.astype(int) - face[0]).mean() < 4  # the face's first frame, not black


def test_frames_where_the_face_is_gone_hold_the_nearest_face(lite, tmp_path):
    """The speaker turns away for a third of a second (here: the picture cuts to the wall behind):
    those frames once kept their wall and borrowed a neighbour's landmarks, so a talking mouth was
    pasted onto the wall, and the wall could be picked as a mouth for the face."""
    from testkit.mediatools import first_frames, write_video

    face = [cv2.resize(f, (320, 320)) for f in first_frames(media("vr_face2.mp4"), 50)]
    wall = cv2.resize(face[0][:60, :60], (320, 320))  # the backdrop above the reader's shoulder
    video = write_video(face[:20] + [wall] * 8 + face[28:], tmp_path / "turned_away.mp4", "libx264", 25)
    r = preprocess(client := lite[0], "turned-away", video)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info["frames"] == 50 and info["face"]["missing_frames"] == 8 and info["source"]["duration_s"] == 2.0
    r = post_audio(client, "/inference/stream/turned-away", media("vr_audio1.wav"))
    assert r.status_code == 200
    parts, _ = parse_mjpeg(r.content)
    shown = [cv2.imdecode(np.frombuffer(p.body, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    _, found = detect_video(shown)
    assert len(shown) == 125 and found.all()  # a face on every frame: no frame of wall with a mouth on it


def test_a_phones_12_megapixel_photo_is_an_avatar(lite, tmp_path):
    """4032x3024, every phone camera's default, was refused 413 by the 4K video frame limit."""
    from testkit.mediatools import first_frames

    face = cv2.resize(first_frames(media("vr_face2.mp4"), 1)[0], (3024, 3024))
    photo = tmp_path / "IMG_0001.jpg"
    cv2.imwrite(str(photo), cv2.copyMakeBorder(face, 0, 0, 504, 504, cv2.BORDER_REPLICATE))
    r = preprocess(lite[0], "phone-photo", photo)
    assert r.status_code == 200, r.text
    assert r.json()["info"]["size"] == [1920, 1440]  # scaled to MUSETALK_MAX_VIDEO_SIDE, as a video's frames are
