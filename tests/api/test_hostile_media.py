"""The hostile corpus (testkit/hostile_media.py) against a real server: a clear 4xx each, never a 5xx,
on every endpoint a file of its kind reaches."""

from __future__ import annotations

import pytest

from helpers import media
from servers import post_audio, preprocess
from testkit.hostile_media import audio_cases, two_face_video, video_cases

AUDIO_ENDPOINTS = ("/inference/stream/face2", "/inference/batch/face2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    return {c.kind + "/" + c.name: c for c in audio_cases(tmp) + video_cases(tmp)}


AUDIO_NAMES = [
    "nan_f32.wav", "inf_f32.wav", "neg_inf_f32.wav", "one_nan_f32.wav", "six_hours.wav", "unsized_700s.wav",
    "zero_samples.wav", "zero_bytes.wav", "header_only.wav", "flipped_header.wav", "truncated.mp3", "flipped.mp3",
    "truncated.ogg", "flipped_header.ogg", "truncated.mp4", "flipped_header.mp4", "image_only.png",
    "video_only.mp4", "text.wav",
]
VIDEO_NAMES = [
    "truncated.mp4", "flipped_header.mp4", "zero_bytes.mp4", "zero_frames.y4m", "8k_by_8k.y4m", "8k_by_8k.png",
    "million_frames.y4m", "audio_only.wav", "no_face.mp4",
]


def test_the_lists_name_the_whole_corpus(corpus):
    assert sorted(corpus) == sorted([f"audio/{n}" for n in AUDIO_NAMES] + [f"video/{n}" for n in VIDEO_NAMES])


@pytest.mark.parametrize("endpoint", AUDIO_ENDPOINTS)
@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_hostile_audio_gets_a_clear_4xx(served, corpus, name, endpoint):
    _, _, client = served
    case = corpus[f"audio/{name}"]
    r = post_audio(client, endpoint, case.path)
    assert (r.status_code, r.json()["code"]) == (case.status, case.code), r.text
    assert set(r.json()) == {"detail", "code"} and r.json()["detail"]


def test_non_finite_audio_names_the_problem(served, corpus):
    _, _, client = served
    for endpoint in AUDIO_ENDPOINTS:
        r = post_audio(client, endpoint, corpus["audio/one_nan_f32.wav"].path)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("the audio holds non-finite sample values (NaN or infinity), first at 0.7")


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_hostile_video_gets_a_clear_4xx(served, corpus, name):
    _, _, client = served
    case = corpus[f"video/{name}"]
    r = preprocess(client, "hostile", case.path)
    assert (r.status_code, r.json()["code"]) == (case.status, case.code), r.text
    assert set(r.json()) == {"detail", "code"} and r.json()["detail"]
    assert client.get("/avatars/hostile").status_code == 404  # nothing half-made is left


@pytest.mark.parametrize("mirror", [False, True])
def test_of_several_faces_the_largest_is_the_avatar(served, tmp_path, mirror):
    _, _, client = served
    clip = two_face_video(tmp_path / "two.mp4", mirror=mirror)
    r = preprocess(client, "two_faces", clip, overwrite="true")
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    x0, _, x1, _ = info["face"]["box_mean"]
    big_width = 844  # vr_face2's frames; the small face fills the remaining 256 px
    width = info["size"][0]
    if mirror:
        assert x0 > width - big_width and info["face"]["missing_frames"] == 0
    else:
        assert x1 < big_width and info["face"]["missing_frames"] == 0
    assert x1 - x0 > 200  # vr_face2's face, not the half-size one


def test_the_service_still_works_after_the_corpus(served):
    _, _, client = served
    r = post_audio(client, "/inference/batch/face2", media("vr_audio1.wav"))
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
