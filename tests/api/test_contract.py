"""The documented contract over real HTTP: every endpoint, every status code, real clips."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from helpers import media
from musetalk_server.media.audio import decode_audio
from servers import make_server, post_audio, preprocess
from testkit.mediatools import parse_mjpeg, read_mp4, silent_wav, write_wav


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "part is not a decodable JPEG"
    return img


def test_health_has_the_seed_shape(served):
    _, _, client = served
    body = client.get("/health").json()
    assert body["status"] == "running"
    assert body["models"] == {"loaded": True, "device": "cpu"}
    assert isinstance(body["loaded_avatars"], list)
    assert body["engine"] == "fake" and body["version"]
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200


def test_preprocess_response_keeps_seed_shape(served):
    _, _, client = served
    body = client.get("/avatars/face2").json()
    info = body["info"]
    assert info["frames"] == 125 and info["fps"] == 25.0 and info["size"] == [844, 844]
    assert info["engine"] == "fake" and info["bbox_shift"] == 0
    assert info["face"]["missing_frames"] == 0
    lo_x, lo_y, hi_x, hi_y = info["face"]["box_mean"]
    assert 0 < lo_x < hi_x < 844 and 0 < lo_y < hi_y < 844


def test_stream_is_mjpeg_with_sync_headers(served):
    _, _, client = served
    r = post_audio(client, "/inference/stream/face2", media("vr_audio1.wav"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
    expected = int(5.016 * 25)  # vr_audio1.wav lasts 5.016 s
    assert r.headers["x-frame-rate"] == "25" and int(r.headers["x-frame-count"]) == expected
    parts, closed = parse_mjpeg(r.content)
    assert closed and len(parts) == expected
    for i, part in enumerate(parts):
        assert part.headers["Content-Type"] == "image/jpeg"
        assert int(part.headers["X-Frame-Index"]) == i
        assert float(part.headers["X-Timestamp-Ms"]) == pytest.approx(i * 40.0)
    assert decode_jpeg(parts[0].body).shape == (844, 844, 3)
    assert all(decode_jpeg(p.body).shape == (844, 844, 3) for p in parts[::10])


def test_batch_is_h264_aac_matching_the_audio(served, tmp_path):
    _, _, client = served
    r = post_audio(client, "/inference/batch/face2", media("st_RD_Radio31_000.wav"))
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    out = tmp_path / "o.mp4"
    out.write_bytes(r.content)
    facts = read_mp4(out)
    assert (facts.video_codec, facts.pix_fmt, facts.audio_codec) == ("h264", "yuv420p", "aac")
    assert facts.frames == 200 and facts.fps == 25.0 and (facts.width, facts.height) == (844, 844)
    assert abs(facts.frames / facts.fps - facts.audio_seconds) <= 1 / 25 + 0.03  # AAC frame padding


@pytest.mark.parametrize("layout", ["mono", "left only", "right only"])
def test_the_mp4_soundtrack_keeps_the_uploads_channels(served, tmp_path, layout):
    """A mono upload gives a mono track; a stereo one keeps its two channels apart (each side's
    speech stays on its side), not mixed down to mono."""
    _, _, client = served
    speech = decode_audio(media("vr_audio1.wav"), rate=48_000)[: 2 * 48_000]
    silence = np.zeros_like(speech)
    samples = {"mono": speech, "left only": np.stack([speech, silence]),
               "right only": np.stack([silence, speech])}[layout]
    r = post_audio(client, "/inference/batch/face2", write_wav(tmp_path / "in.wav", samples, 48_000))
    assert r.status_code == 200
    out = tmp_path / "o.mp4"
    out.write_bytes(r.content)
    assert read_mp4(out).audio_channels == (1 if layout == "mono" else 2)
    track = decode_audio(out, rate=48_000, keep_stereo=True)
    loud = np.sqrt(np.mean(track**2, axis=1))
    assert loud.min() > 0.02 if layout == "mono" else loud.max() > 0.02
    if layout != "mono":
        quiet, heard = (1, 0) if layout == "left only" else (0, 1)
        assert loud[quiet] < 0.01 * loud[heard], loud


def test_batch_leaves_no_temporary_files(served, tmp_path):
    server, _, client = served
    assert post_audio(client, "/inference/batch/face2", media("vr_audio1.wav")).status_code == 200
    results = server.server.config.app.state.musetalk.settings.result_dir
    deadline = time.monotonic() + 5  # the file goes in a background task after the last byte
    while list((results / "outputs").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((results / "outputs").iterdir()) == []
    assert list((results / "uploads").iterdir()) == []


def test_list_show_delete(served):
    _, _, client = served
    assert preprocess(client, "tmp_one", media("vr_face2.mp4")).status_code == 200
    ids = [a["avatar_id"] for a in client.get("/avatars").json()["avatars"]]
    assert {"face2", "tmp_one"} <= set(ids)
    assert client.delete("/avatars/tmp_one").json() == {"message": "Avatar deleted", "avatar_id": "tmp_one"}
    r = client.get("/avatars/tmp_one")
    assert r.status_code == 404 and r.json()["code"] == "avatar_not_found"
    assert client.delete("/avatars/tmp_one").status_code == 404


def test_a_new_avatar_stays_loaded_and_leaves_on_delete(served):
    _, _, client = served
    assert preprocess(client, "warm", media("vr_face2.mp4")).status_code == 200
    assert "warm" in client.get("/health").json()["loaded_avatars"]
    assert client.delete("/avatars/warm").status_code == 200
    assert "warm" not in client.get("/health").json()["loaded_avatars"]


def test_unknown_avatar_is_404_json(served):
    _, _, client = served
    for path in ("/inference/stream/ghost", "/inference/batch/ghost"):
        r = post_audio(client, path, media("vr_audio1.wav"))
        assert r.status_code == 404
        assert r.json() == {"detail": "avatar 'ghost' does not exist; preprocess it first", "code": "avatar_not_found"}


def test_existing_avatar_409_then_overwrite(served):
    _, _, client = served
    # The same video and bbox_shift is a retry: 200 with the avatar there (tests/api/test_retries.py).
    r = preprocess(client, "face2", media("vr_face2.mp4"))
    assert r.status_code == 200 and r.json()["message"] == "Avatar already processed (same video and bbox_shift)"
    r = preprocess(client, "face2", media("vr_face1.mp4"))
    assert r.status_code == 409 and r.json()["code"] == "avatar_exists"
    r = preprocess(client, "face2", media("vr_face2.mp4"), overwrite="true", bbox_shift="5")
    assert r.status_code == 200 and r.json()["info"]["bbox_shift"] == 5


@pytest.mark.parametrize("bad", ["../../etc", "a.b", "x" * 65, "with space"])
def test_invalid_avatar_ids(served, bad):
    _, _, client = served
    before = client.get("/avatars").json()
    r = preprocess(client, bad, media("vr_face2.mp4"))
    assert r.status_code == 422 and r.json()["code"] == "invalid_avatar_id"
    assert client.get("/avatars").json() == before


def test_bad_video_inputs_leave_the_store_unchanged(served, tmp_path):
    _, _, client = served
    before = client.get("/avatars").json()
    data = media("vr_face2.mp4").read_bytes()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n")
    for clip in (truncated, text):
        r = preprocess(client, "bad1", clip)
        assert r.status_code == 415, r.text
        assert r.json()["code"] == "unsupported_media" and str(tmp_path) not in r.json()["detail"]
    # Audio is not a video.
    r = preprocess(client, "bad1", media("vr_audio1.wav"))
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media")
    assert client.get("/avatars").json() == before


def test_video_without_a_face(served, tmp_path):
    _, _, client = served
    still = tmp_path / "wall.png"
    cv2.imwrite(str(still), np.full((360, 480, 3), (90, 140, 200), np.uint8))
    r = preprocess(client, "noface", still)
    assert r.status_code == 422
    assert r.json()["code"] == "no_face_detected" and "frame 0" in r.json()["detail"]
    assert client.get("/avatars/noface").status_code == 404


def test_bad_audio_inputs(served, tmp_path):
    _, _, client = served
    empty = silent_wav(tmp_path / "empty.wav", 0.0)
    r = post_audio(client, "/inference/stream/face2", empty)
    assert (r.status_code, r.json()["code"]) == (422, "unsupported_media")
    tiny = silent_wav(tmp_path / "tiny.wav", 0.02)
    r = post_audio(client, "/inference/batch/face2", tiny)
    assert (r.status_code, r.json()["code"]) == (422, "invalid_input")
    text = tmp_path / "speech.wav"
    text.write_text("words, not sound")
    r = post_audio(client, "/inference/stream/face2", text)
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media")
    # A video without a sound track holds no audio, whatever it is called.
    r = post_audio(client, "/inference/stream/face2", media("mt_yongen.mp4"))
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media")


def test_audio_is_recognised_by_content_not_extension(served, tmp_path):
    _, _, client = served
    renamed = tmp_path / "speech.mp3"
    renamed.write_bytes(media("vr_audio1.wav").read_bytes())  # a WAV under an .mp3 name
    r = post_audio(client, "/inference/stream/face2", renamed)
    assert r.status_code == 200 and int(r.headers["x-frame-count"]) == 125


def test_missing_fields_are_422_json(served):
    _, _, client = served
    r = client.post("/avatars/preprocess", data={"avatar_id": "x"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input" and "video_file" in r.json()["detail"]
    r = client.post("/avatars/preprocess", data={"avatar_id": "x", "bbox_shift": "up"},
                    files={"video_file": ("v.mp4", b"123")})
    assert r.status_code == 422 and "bbox_shift" in r.json()["detail"]
    r = client.post("/inference/stream/face2")
    assert r.status_code == 422 and "audio_file" in r.json()["detail"]


def test_metrics_are_prometheus_text(served):
    _, _, client = served
    # A stream and a batch of its own: the first-frame and render-fps histograms have no sample
    # before them, and the tests that render may be deselected (make test-quick) or skipped.
    for mode in ("stream", "batch"):
        assert post_audio(client, f"/inference/{mode}/face2", media("vr_audio1.wav")).status_code == 200
    text = client.get("/metrics").text
    for name in ("musetalk_requests_total", "musetalk_frames_generated_total", "musetalk_active_streams",
                 "musetalk_time_to_first_frame_seconds_bucket", "musetalk_preprocess_seconds_count",
                 "musetalk_render_fps_bucket", "musetalk_queue_depth"):
        assert name in text
    assert 'musetalk_requests_total{method="POST",route="/avatars/preprocess",status="200"}' in text


def test_openapi_docs(served):
    _, _, client = served
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/avatars/preprocess", "/inference/stream/{avatar_id}", "/inference/batch/{avatar_id}"} <= set(paths)


def test_oversize_uploads_are_413(tmp_path):
    import httpx

    with make_server(tmp_path, max_upload_mb=0.05) as server, httpx.Client(base_url=server.url) as client:
        r = preprocess(client, "big", media("vr_face2.mp4"))
        assert (r.status_code, r.json()["code"]) == (413, "too_large")
        r = post_audio(client, "/inference/stream/big", media("mt_eng.wav"))
        assert (r.status_code, r.json()["code"]) == (413, "too_large")
        assert client.get("/avatars").json() == {"avatars": []}


def test_too_long_audio_is_413(served, tmp_path):
    import httpx

    with make_server(tmp_path, max_audio_seconds=10) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "s", media("vr_face2.mp4")).status_code == 200
        r = post_audio(client, "/inference/stream/s", media("mt_eng.wav"))
        assert (r.status_code, r.json()["code"]) == (413, "too_large")


def test_api_key(tmp_path):
    import httpx

    with make_server(tmp_path, api_key="s3cret") as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/health").status_code == 200  # probes carry no key
        r = client.get("/avatars")
        assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
        assert client.get("/avatars", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/avatars", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/avatars", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = post_audio(client, "/inference/stream/x", media("vr_audio1.wav"))
        assert r.status_code == 401
