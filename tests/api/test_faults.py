
"""Faults the service must survive: a kill -9 mid-request, a client gone mid-upload, a full disk,
a corrupt avatar on disk. Real server processes, real files."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers import media
from musetalk_server.avatars.layout import STAGING
from musetalk_server.disk.sweeper import sweep_temp
from server_process import ServerProcess
from servers import make_server, post_audio, preprocess
from testkit.mediatools import first_frames, silent_wav, transcode_audio, write_video

DEADLINE_S = 60.0  # generous: only a hung server takes this long
FILE_LIMIT = 256 * 1024  # RLIMIT_FSIZE: above the short clip's upload, below one 844x844 PNG frame


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _wait_for(what: str, check) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _in_background(fn) -> threading.Thread:
    def run():
        with contextlib.suppress(httpx.TransportError):  # the server was killed under it: that is the point
            fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """Ten frames of vr_face2: a small upload whose avatar frames are large PNGs."""
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    return write_video(first_frames(media("vr_face2.mp4"), 10), path, "libx264", 25.0, fmt="mp4")


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> Path:
    return silent_wav(tmp_path_factory.mktemp("speech") / "two_seconds.wav", 2.0)


def test_kill_9_mid_request_leaves_debris_the_restart_sweeps(tmp_path, short_clip, short_speech):
    results = tmp_path / "results"
    with ServerProcess(results) as srv, httpx.Client(base_url=srv.url) as client:
        assert preprocess(client, "face2", short_clip).status_code == 200
    # A slow engine (50 frames take 10 s; preparing takes minutes), so the kill lands while a
    # batch writes its MP4 and a preprocess its avatar.
    with ServerProcess(results, engine={"delay_s": 0.2, "prepare_delay_s": 120}) as srv, \
            httpx.Client(base_url=srv.url) as client:
        _in_background(lambda: post_audio(client, "/inference/batch/face2", short_speech))
        _in_background(lambda: preprocess(client, "victim", short_clip))
        _wait_for("an MP4 being written, an upload and a staging folder", lambda: (
            _files(results / "outputs") and _files(results / "uploads")
            and _files(results / "avatars" / STAGING)))
        srv.kill()
    assert _files(results / "outputs") and _files(results / "uploads")  # what kill -9 leaves
    with ServerProcess(results) as srv, httpx.Client(base_url=srv.url) as client:
        assert _files(results / "outputs") == _files(results / "uploads") == []
        assert _files(results / "avatars" / STAGING) == []
        assert client.get("/avatars/victim").status_code == 404
        assert post_audio(client, "/inference/stream/face2", short_speech).status_code == 200


def test_sweep_removes_only_files_older_than_the_ttl(tmp_path):
    for name in ("uploads", "outputs"):
        (tmp_path / name).mkdir()
        stale, fresh = tmp_path / name / "stale", tmp_path / name / "fresh"
        stale.write_bytes(b"x")
        fresh.write_bytes(b"x")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "avatars").mkdir()  # not a temp folder: never swept
    os.utime(tmp_path / "avatars", (0, 0))
    assert sweep_temp(tmp_path, 3600) == 2
    assert _files(tmp_path / "uploads") == _files(tmp_path / "outputs") == ["fresh"]
    assert (tmp_path / "avatars").is_dir()


def test_the_sweeper_runs_periodically_while_serving(tmp_path):
    with make_server(tmp_path, temp_ttl_s=2):
        uploads = tmp_path / "results" / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        left = uploads / "upload-left-behind.wav"
        left.write_bytes(b"x" * 100)
        os.utime(left, (time.time() - 3600, time.time() - 3600))
        _wait_for("the periodic sweep", lambda: not left.exists())


def _partial_upload(port: int, path: str, field: str, sent: int, declared: int) -> None:
    """Send a multipart body's first `sent` of `declared` bytes, then hang up."""
    boundary = "cutoff"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"cut.wav\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request + head + b"\0" * (sent - len(head)))
        time.sleep(0.5)  # let the server take in what came, then leave mid-body


@pytest.mark.parametrize("path,field", [("/avatars/preprocess", "video_file"),
                                        ("/inference/batch/face2", "audio_file")])
def test_an_upload_cut_off_mid_way_leaves_no_file(tmp_path, path, field):
    spool = tmp_path / "tmp"
    spool.mkdir()
    with ServerProcess(tmp_path / "results", tmpdir=spool) as srv:
        # 3 MB of 8: past the multipart parser's 1 MB in memory, so it spools to disk first.
        _partial_upload(srv.port, path, field, sent=3 << 20, declared=8 << 20)
        _wait_for("the cut-off upload to be dropped", lambda: not _files(spool)
                  and not _files(tmp_path / "results" / "uploads"))
        assert httpx.get(f"{srv.url}/health").status_code == 200
    assert _files(spool) == [] and _files(tmp_path / "results" / "uploads") == []


def test_full_disk_during_preprocess_answers_507_and_keeps_nothing(tmp_path, short_clip):
    assert short_clip.stat().st_size < FILE_LIMIT
    results = tmp_path / "results"
    with ServerProcess(results, max_file_bytes=FILE_LIMIT) as srv, httpx.Client(base_url=srv.url) as client:
        r = preprocess(client, "full", short_clip)
        assert r.status_code == 507
        assert r.json() == {"detail": "the server ran out of storage while writing avatar 'full'",
                            "code": "insufficient_storage"}
        assert client.get("/avatars/full").status_code == 404
        assert client.get("/health/live").status_code == 200
        # The log names the OS's own error, so an operator can tell a full disk from a quota or a file limit.
        assert "insufficient_storage on /avatars/preprocess: the server ran out of storage while writing avatar " \
               "'full' (OSError: [Errno 27] File too large" in srv.log.read_text()
    assert _files(results / "avatars" / STAGING) == [] and _files(results / "uploads") == []
    assert not (results / "avatars" / "full").exists()


def test_full_disk_during_batch_answers_507_and_keeps_nothing(tmp_path, short_clip):
    results = tmp_path / "results"
    speech = transcode_audio(media("mt_eng.wav"), tmp_path / "speech.ogg", "libopus", rate=48_000, fmt="ogg",
                             seconds=15)
    assert speech.stat().st_size < FILE_LIMIT
    with ServerProcess(results) as srv, httpx.Client(base_url=srv.url) as client:
        assert preprocess(client, "small", short_clip).status_code == 200
    with ServerProcess(results, max_file_bytes=FILE_LIMIT) as srv, httpx.Client(base_url=srv.url) as client:
        r = post_audio(client, "/inference/batch/small", speech)
        assert r.status_code == 507
        assert r.json() == {"detail": "the server ran out of storage while writing the MP4",
                            "code": "insufficient_storage"}
        assert _files(results / "outputs") == []
        # An upload over the limit fails while the request body spools to disk: 507 too.
        r = post_audio(client, "/inference/batch/small", media("mt_eng.wav"))
        assert r.status_code == 507
        assert r.json() == {"detail": "the server ran out of storage for the request", "code": "insufficient_storage"}
        # The stream writes nothing, so it still serves.
        assert post_audio(client, "/inference/stream/small", speech).status_code == 200
    assert _files(results / "outputs") == [] and _files(results / "uploads") == []


CORRUPTIONS = {
    "truncated_frame": lambda folder: _truncate(folder / "frames" / "000003.png", 100),
    "missing_frame": lambda folder: (folder / "frames" / "000005.png").unlink(),
    "truncated_manifest": lambda folder: _truncate(folder / "manifest.json", 40),
    "garbage_manifest": lambda folder: (folder / "manifest.json").write_bytes(b"\xff\xfe not json"),
    "manifest_without_frames": lambda folder: (folder / "manifest.json").write_text('{"avatar_id": "bad"}'),
    "truncated_landmarks": lambda folder: _truncate(folder / "landmarks.npy", 64),
}
MANIFEST_CORRUPTIONS = {"truncated_manifest", "garbage_manifest", "manifest_without_frames"}


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture(scope="module")
def two_avatars(tmp_path_factory, short_clip) -> Path:
    """A results folder with avatars `bad` and `good`, made once; each test corrupts a copy."""
    tmp = tmp_path_factory.mktemp("corrupt")
    with make_server(tmp) as server, httpx.Client(base_url=server.url) as client:
        for avatar_id in ("bad", "good"):
            assert preprocess(client, avatar_id, short_clip).status_code == 200
    return tmp



@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_avatar_answers_500_avatar_corrupt_alone(tmp_path, two_avatars, short_speech, corruption, caplog):

    shutil.copytree(two_avatars / "results", tmp_path / "results")
    CORRUPTIONS[corruption](tmp_path / "results" / "avatars" / "bad")
    audio = short_speech
    # A fresh server: nothing in memory, so every frame is read back from disk.
    with make_server(tmp_path) as server, httpx.Client(base_url=server.url) as client:
        show = client.get("/avatars/bad")
        stream = post_audio(client, "/inference/stream/bad", audio)
        batch = post_audio(client, "/inference/batch/bad", audio)
        failing = [stream, batch] + ([show] if corruption in MANIFEST_CORRUPTIONS else [])
        for r in failing:
            assert r.status_code == 500, r.text
            assert r.json()["code"] == "avatar_corrupt"
            assert r.json()["detail"].startswith("avatar 'bad' is corrupt on disk: ")
            assert str(tmp_path) not in r.json()["detail"]  # no server paths
        if corruption not in MANIFEST_CORRUPTIONS:
            assert show.status_code == 200  # the manifest itself is fine
        # The other avatar is untouched, on every endpoint, and the list still answers.
        assert client.get("/avatars/good").status_code == 200
        assert post_audio(client, "/inference/stream/good", audio).status_code == 200
        assert post_audio(client, "/inference/batch/good", audio).status_code == 200
        listed = [a["avatar_id"] for a in client.get("/avatars").json()["avatars"]]
        assert "good" in listed and ("bad" in listed) == (corruption not in MANIFEST_CORRUPTIONS)
    logged = [r.getMessage() for r in caplog.records if "avatar_corrupt" in r.getMessage()]
    assert logged and all("avatar 'bad' is corrupt on disk" in m for m in logged)
