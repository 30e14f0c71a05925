"""Async batch jobs on a real server: 202 and a job id, progress in frames, the MP4, cancel,
expiry, and every refusal in the one error shape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fakes import FakeEngine
from helpers import LiveServer, media
from servers import make_server, post_audio, preprocess
from testkit.mediatools import read_mp4, write_still

AUDIO = "vr_audio1.wav"  # 5.0 s: 125 frames at 25 fps
FRAMES = 125
POLL_S = 0.02


def make_avatar(client: httpx.Client, tmp: Path) -> None:
    """A one-frame avatar (a still): cheap to make, and the render length comes from the audio."""

    still = tmp / "face.png"
    write_still(media("vr_face2.mp4"), still)
    assert preprocess(client, "face", still).status_code == 200


def eventually(check: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(POLL_S)
    return result


def submit(client: httpx.Client, avatar: str = "face") -> httpx.Response:
    return post_audio(client, f"/inference/batch/{avatar}", media(AUDIO), params={"async": "true"})


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[LiveServer, FakeEngine, httpx.Client, Path]]:
    tmp = tmp_path_factory.mktemp("jobs")
    engine = FakeEngine()
    with make_server(tmp, engine) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        make_avatar(client, tmp)
        yield server, engine, client, tmp / "results" / "jobs"


def test_202_then_progress_then_the_mp4(served, tmp_path):
    _, engine, client, folder = served
    engine.delay_s = 0.03  # at least 3.75 s of rendering: polls see it mid-way
    r = submit(client)
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["job_id"]
    assert len(job_id) >= 22 and body["status_url"] == f"/jobs/{job_id}" == r.headers["location"]
    assert body["result_url"] == f"/jobs/{job_id}/result"
    assert body["state"] in ("queued", "running") and body["avatar_id"] == "face" and body["fps"] == 25.0
    assert body["progress"] == {"frames_done": 0, "frames_total": FRAMES} and body["error"] is None

    early = client.get(f"/jobs/{job_id}/result")
    assert early.status_code == 409 and early.json()["code"] == "job_not_finished"
    assert early.json()["detail"].startswith(f"job '{job_id}' is ")

    seen = []
    while (status := client.get(f"/jobs/{job_id}").json())["state"] != "done":
        assert status["state"] in ("queued", "running"), status
        seen.append(status["progress"]["frames_done"])
        time.sleep(POLL_S)
    engine.delay_s = 0.0
    assert seen == sorted(seen) and any(0 < n < FRAMES for n in seen)
    assert status["progress"] == {"frames_done": FRAMES, "frames_total": FRAMES}
    assert status["finished_at"] and status["expires_at"] > status["finished_at"]

    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert result.headers["x-frame-count"] == str(FRAMES) and result.headers["x-frame-rate"] == "25"
    out = tmp_path / "job.mp4"
    out.write_bytes(result.content)
    facts = read_mp4(out)
    assert (facts.video_codec, facts.pix_fmt, facts.frames, facts.fps, facts.audio_codec) == (
        "h264", "yuv420p", FRAMES, 25.0, "aac")
    assert abs(facts.audio_seconds - 5.0) < 0.05
    # Fetching it again works until it expires; the file is the job's own, under results/jobs.
    assert client.get(f"/jobs/{job_id}/result").content == result.content
    assert (folder / f"{job_id}.mp4").is_file()
    metrics = client.get("/metrics").text
    assert 'musetalk_jobs{state="done"} 1.0' in metrics
    assert 'musetalk_frames_generated_total{engine="fake",mode="job"} 125.0' in metrics

    # DELETE of a finished job discards it and its file.
    gone = client.delete(f"/jobs/{job_id}")
    assert gone.status_code == 200 and gone.json()["state"] == "done"
    assert not (folder / f"{job_id}.mp4").exists()
    assert client.get(f"/jobs/{job_id}").json()["code"] == "job_not_found"


def test_cancel_stops_the_render_and_removes_the_file(served):
    _, engine, client, folder = served
    engine.delay_s = 0.05  # over 6 s in all
    job_id = submit(client).json()["job_id"]
    eventually(lambda: client.get(f"/jobs/{job_id}").json()["progress"]["frames_done"] >= 5)
    asked = time.monotonic()
    r = client.delete(f"/jobs/{job_id}")
    engine.delay_s = 0.0
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert engine.finished_at is not None and engine.finished_at - asked < 1.0
    assert 5 <= engine.produced < FRAMES and r.json()["progress"]["frames_done"] == engine.produced
    assert not (folder / f"{job_id}.mp4").exists()
    shown = client.get(f"/jobs/{job_id}").json()
    assert shown["state"] == "cancelled" and shown["progress"]["frames_done"] < FRAMES
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 409
    assert result.json() == {"detail": f"job '{job_id}' was cancelled", "code": "job_failed"}


def test_a_long_job_cancels_as_promptly_as_a_short_one(served, tmp_path):
    """A cancelled render once closed its MP4 as if finished, encoding the rest of the soundtrack
    first: for ten minutes of audio, seconds after the cancel, past DELETE's wait, so the answer
    still said "running"."""
    import numpy as np

    from testkit.mediatools import write_wav

    _, engine, client, folder = served
    engine.delay_s = 0.05
    hiss = np.random.default_rng(7).normal(0, 0.1, 590 * 16_000).astype(np.float32)  # AAC encodes silence fast
    long = write_wav(tmp_path / "ten_minutes.wav", hiss, 16_000)
    job_id = post_audio(client, "/inference/batch/face", long, params={"async": "true"}).json()["job_id"]
    eventually(lambda: client.get(f"/jobs/{job_id}").json()["progress"]["frames_done"] >= 5)
    r = client.delete(f"/jobs/{job_id}")
    engine.delay_s = 0.0
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.json()
    assert r.json()["progress"]["frames_total"] == 590 * 25 and not (folder / f"{job_id}.mp4").exists()


def test_a_queued_job_waits_for_the_worker_and_cancels_without_rendering(served):
    _, engine, client, folder = served
    engine.delay_s = 0.05  # MUSETALK_JOB_WORKERS=1: the second job waits for the first
    first, second = submit(client).json()["job_id"], submit(client).json()["job_id"]
    eventually(lambda: client.get(f"/jobs/{first}").json()["state"] == "running")
    assert client.get(f"/jobs/{second}").json()["state"] == "queued"
    metrics = client.get("/metrics").text
    assert 'musetalk_jobs{state="queued"} 1.0' in metrics and 'musetalk_jobs{state="running"} 1.0' in metrics
    r = client.delete(f"/jobs/{second}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert r.json()["progress"] == {"frames_done": 0, "frames_total": FRAMES}
    assert client.delete(f"/jobs/{first}").json()["state"] == "cancelled"
    engine.delay_s = 0.0
    assert client.get(f"/jobs/{second}").json()["state"] == "cancelled"
    assert not (folder / f"{first}.mp4").exists() and not (folder / f"{second}.mp4").exists()


def test_jobs_accepted_before_their_avatar_is_deleted_still_render(served, tmp_path):
    """docs/api.md: a job already accepted keeps the avatar it was accepted for (local mode)."""
    _, engine, client, _ = served
    still = tmp_path / "gone.png"
    write_still(media("vr_face2.mp4"), still)
    assert preprocess(client, "gone", still).status_code == 200
    engine.delay_s = 0.01
    running, queued = submit(client, "gone").json()["job_id"], submit(client, "gone").json()["job_id"]
    eventually(lambda: client.get(f"/jobs/{running}").json()["state"] == "running")
    assert client.delete("/avatars/gone").json() == {"message": "Avatar deleted", "avatar_id": "gone"}
    assert client.get("/avatars/gone").status_code == 404
    engine.delay_s = 0.0
    for job_id in (running, queued):
        eventually(lambda job=job_id: client.get(f"/jobs/{job}").json()["state"] in ("done", "failed"))
        assert client.get(f"/jobs/{job_id}").json()["state"] == "done"
        result = client.get(f"/jobs/{job_id}/result")
        assert result.status_code == 200 and result.headers["x-frame-count"] == str(FRAMES)


def test_a_failed_render_reports_its_error(tmp_path):
    engine = FakeEngine(fail_at=3)
    with make_server(tmp_path, engine) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        make_avatar(client, tmp_path)
        job_id = submit(client).json()["job_id"]
        status = eventually(lambda: (s := client.get(f"/jobs/{job_id}").json())["state"] == "failed" and s)
        assert status["error"] == {"detail": "rendering failed; the server log has the details",
                                   "code": "internal_error"}
        assert status["progress"]["frames_done"] == 3
        result = client.get(f"/jobs/{job_id}/result")
        assert result.status_code == 409 and result.json()["code"] == "job_failed"
        assert list((tmp_path / "results" / "jobs").iterdir()) == []


def test_unknown_jobs_and_checks_before_the_202(served):
    _, _, client, _ = served
    for method, path in (("GET", "/jobs/nope"), ("GET", "/jobs/nope/result"), ("DELETE", "/jobs/nope")):
        r = client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"detail": "job 'nope' does not exist (or it expired, or was deleted)",
                            "code": "job_not_found"}
        # Not an id jobs are given: refused before any lookup, in the one error body.
        bad = client.request(method, path.replace("nope", "no.pe"))
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_input", bad.text
        assert "job_id" in bad.json()["detail"], bad.text
    # The render job is opened before the 202: a missing avatar or bad audio is refused at once.
    r = submit(client, "ghost")
    assert r.status_code == 404 and r.json()["code"] == "avatar_not_found"
    r = client.post("/inference/batch/face", params={"async": "true"},
                    files={"audio_file": ("a.wav", b"not audio", "audio/wav")})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media"
    # Without async the endpoint is the seed's: the MP4 itself.
    sync = post_audio(client, "/inference/batch/face", media(AUDIO))
    assert sync.status_code == 200 and sync.headers["content-type"] == "video/mp4"


def test_jobs_expire_with_their_files_and_the_queue_is_bounded(tmp_path):
    engine = FakeEngine(delay_s=0.01)
    with make_server(tmp_path, engine, job_ttl_s=0.5, max_jobs=1, api_key="k") as server, \
            httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": "k"}) as client:
        make_avatar(client, tmp_path)
        folder = tmp_path / "results" / "jobs"
        # A stray file from a killed process, older than the TTL, is swept too.
        folder.mkdir(parents=True, exist_ok=True)
        stray = folder / "left-by-a-dead-server.mp4"
        stray.write_bytes(b"x")
        first = submit(client)
        assert first.status_code == 202
        job_id = first.json()["job_id"]
        full = submit(client)
        assert full.status_code == 429 and full.json()["code"] == "too_many_jobs"
        assert httpx.get(f"{server.url}/jobs/{job_id}").json()["code"] == "unauthorized"

        eventually(lambda: client.get(f"/jobs/{job_id}").json().get("state") == "done")
        assert (folder / f"{job_id}.mp4").is_file()
        # Nobody asks: the sweeper alone expires it.
        eventually(lambda: not (folder / f"{job_id}.mp4").exists() and not stray.exists())
        r = client.get(f"/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"
        assert submit(client).status_code == 202  # the slot is free again
    assert list(folder.iterdir()) == []  # shutdown removes what no one can fetch any more


def test_the_python_client_runs_a_job(served, tmp_path):
    from musetalk_client import Client, ClientError

    server, _, _, _ = served
    with Client(server.url) as c:
        job = c.submit_batch("face", media(AUDIO))
        eventually(lambda: c.job(job["job_id"])["state"] == "done")
        out = c.job_result(job["job_id"], tmp_path / "client.mp4")
        assert read_mp4(out).frames == FRAMES
        assert c.cancel_job(job["job_id"])["state"] == "done"
        with pytest.raises(ClientError) as missing:
            c.job(job["job_id"])
        assert missing.value.status == 404 and missing.value.code == "job_not_found"


def test_a_result_removed_just_before_it_is_sent_answers_409(served, monkeypatch):
    """The MP4 gone between the job's check and the answer (a DELETE of the job meanwhile) was
    Starlette's 500: "File at path ... does not exist"."""
    from musetalk_server.render.async_jobs import Jobs

    _, _, client, _ = served
    job_id = submit(client).json()["job_id"]
    eventually(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "done")
    checked = Jobs.result

    def checked_then_removed(self, job_id):
        job = checked(self, job_id)
        job.path.unlink()
        return job

    monkeypatch.setattr(Jobs, "result", checked_then_removed)
    r = client.get(f"/jobs/{job_id}/result")
    assert r.status_code == 409
    assert r.json() == {"detail": f"job '{job_id}' is done but its MP4 is no longer on the volume; submit it again",
                        "code": "job_failed"}
