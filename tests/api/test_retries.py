"""A preprocess is safe to retry: the same id, video and bbox_shift answer the avatar already
there (200, not recomputed); anything different is still a 409 unless overwrite=true."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from fakes import FakeEngine
from helpers import media
from musetalk_server.avatars.info import ALREADY_PROCESSED, PROCESSED
from musetalk_server.avatars.layout import AvatarLayout
from servers import make_server, preprocess
from testkit.mediatools import first_frames

PREPARE_S = 1.5  # long enough for the first client to give up
CLIENT_TIMEOUT_S = 0.3


@pytest.fixture
def stills(tmp_path):
    """Two different one-frame videos (stills) of the same speaker: cheap to preprocess."""
    import cv2

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    frames = first_frames(media("vr_face2.mp4"), 40)
    cv2.imwrite(str(a), frames[0])
    cv2.imwrite(str(b), frames[39])
    return a, b


def upload(client: httpx.Client, clip, timeout: float, **data) -> httpx.Response:
    return client.post("/avatars/preprocess", data={"avatar_id": "anchor", **data},
                       files={"video_file": (clip.name, clip.read_bytes(), "image/png")}, timeout=timeout)


def test_a_retry_after_a_client_timeout_gets_the_avatar_without_recomputing(tmp_path, stills):
    a, b = stills
    engine = FakeEngine(prepare_delay_s=PREPARE_S)
    layout = AvatarLayout(tmp_path / "results" / "avatars")
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url) as client:
        # 1. the client gives up; the server finishes the avatar anyway
        with pytest.raises(httpx.TimeoutException):
            upload(client, a, CLIENT_TIMEOUT_S)
        # 2. the retry (it may arrive while the first is still running: it waits for it)
        retry = upload(client, a, 30)
        assert retry.status_code == 200, retry.text
        body = retry.json()
        assert body["message"] == ALREADY_PROCESSED and body["avatar_id"] == "anchor"
        assert engine.prepared == 1
        assert body["info"] == client.get("/avatars/anchor").json()["info"]
        assert body["info"]["source"]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
        stamp = layout.stamp("anchor")

        # 3. again and again: same answer, the avatar on disk untouched
        again = upload(client, a, 30)
        assert again.status_code == 200 and again.json() == body
        assert engine.prepared == 1 and layout.stamp("anchor") == stamp

        # 4. another video, or another bbox_shift: still refused
        other = upload(client, b, 30)
        assert other.status_code == 409
        assert other.json() == {"code": "avatar_exists", "detail": (
            "avatar 'anchor' already exists and it was made from a different video; "
            "pass overwrite=true to replace it")}
        shifted = upload(client, a, 30, bbox_shift="3")
        assert shifted.status_code == 409 and shifted.json()["code"] == "avatar_exists"
        assert "its bbox_shift is 0, not 3" in shifted.json()["detail"]
        assert engine.prepared == 1 and layout.stamp("anchor") == stamp

        # 5. overwrite replaces it, and a retry of that is recognised in turn
        replaced = upload(client, b, 30, overwrite="true")
        assert replaced.status_code == 200 and replaced.json()["message"] == PROCESSED
        assert engine.prepared == 2 and layout.stamp("anchor") != stamp
        assert replaced.json()["info"]["source"]["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()
        assert upload(client, b, 30).json()["message"] == ALREADY_PROCESSED
        assert engine.prepared == 2
        assert list((tmp_path / "results" / "uploads").iterdir()) == []


def test_an_avatar_made_before_hashing_is_not_taken_for_the_same(tmp_path, stills):
    a, _ = stills
    with make_server(tmp_path) as server, httpx.Client(base_url=server.url) as client:
        assert upload(client, a, 30).status_code == 200
        manifest = tmp_path / "results" / "avatars" / "anchor" / "manifest.json"
        old = json.loads(manifest.read_text())
        del old["source"]["sha256"]
        manifest.write_text(json.dumps(old))
        r = upload(client, a, 30)
        assert r.status_code == 409 and r.json()["code"] == "avatar_exists"
        assert "its source was never hashed (made before sources were, or applied with kubectl)" in r.json()["detail"]


def test_the_seed_client_retry_pattern_on_a_real_clip(tmp_path):
    """The seed's own snippet, posted twice: the second answers 200 with the same info."""
    with make_server(tmp_path) as server, httpx.Client(base_url=server.url) as client:
        first = preprocess(client, "avatar1", media("seed_short_test_video.mp4"))
        second = preprocess(client, "avatar1", media("seed_short_test_video.mp4"))
        assert first.status_code == second.status_code == 200
        assert (first.json()["message"], second.json()["message"]) == (PROCESSED, ALREADY_PROCESSED)
        assert first.json()["info"] == second.json()["info"]
