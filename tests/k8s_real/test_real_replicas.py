"""Three replicas in cluster mode behind a real load balancer: one service, not three.

Three real server processes (tests/server_process.py, the fake engine) in cluster mode share one
volume folder and the real kube-apiserver, each with the chart's server ServiceAccount token
(its real RBAC), behind a real nginx (tests/load_balancer.py) balancing round robin.

The operator's part (an Avatar's Job building it onto the volume, then status Ready) is played
by the test (`AvatarBuilder`), as the other tests here play the kubelet's: the operator and its
Jobs are tests/k8s_real/test_real_operator.py's business, and what is under test here is what the
replicas make of the resources. Timing bounds are the documented ones (docs/operations.md) plus
a slack for this shared 2-core machine.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from k8s_real_helpers import GROUP, VERSION, Cluster, eventually, service_account_kubeconfig

from helpers import media
from load_balancer import Nginx
from musetalk_server.api.shutdown import FLUSH_S
from musetalk_server.avatars.layout import MANIFEST
from musetalk_server.avatars.store import AvatarStore
from server_process import ServerProcess

HEARTBEAT_S, LEASE_S, RECHECK_S, GRACE_S = 0.5, 3.0, 0.5, 3.0
SLACK_S = 3.0  # this machine's scheduling noise (2 cores shared with other work)
# The fake engine's frames are sleeps, not CPU: four steps at once on this 2-core machine.
SETTINGS = {"avatar_source": "kubernetes", "kube_poll_s": 0.1, "job_heartbeat_s": HEARTBEAT_S,
            "job_lease_s": LEASE_S, "avatar_recheck_s": RECHECK_S, "shutdown_grace_s": GRACE_S, "device_workers": 4}
FRAME_DELAY_S = 0.01  # the fake engine's time per frame
SPEECH = media("vr_audio1.wav")  # 5.016 s: 125 frames at 25 fps
LONG_SPEECH = media("mt_eng.wav")  # 60 s: 1500 frames, ~15 s of the fake engine's time
JOBS = "renderjobs"


@dataclass
class Replicas:
    servers: list[ServerProcess]
    balancer: Nginx
    namespace: str
    volume: Path

    def named(self, name: str) -> ServerProcess:
        return self.servers[int(name.rsplit("-", 1)[1])]


class AvatarBuilder:
    """The operator and its Job, played: each new generation of an Avatar becomes a fake-engine
    avatar on the volume (frames `64 + 32 * (generation - 1)` px wide), then status Ready."""

    def __init__(self, cluster: Cluster, namespace: str, volume: Path) -> None:
        self.cluster, self.namespace, self.store = cluster, namespace, AvatarStore(volume / "avatars")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AvatarBuilder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            items = self.cluster.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "avatars")
            for avatar in items["items"]:
                generation = avatar["metadata"]["generation"]
                if (avatar.get("status") or {}).get("observedGeneration") != generation:
                    self._build(avatar["metadata"]["name"], generation)

    def _build(self, name: str, generation: int) -> None:
        side, frames = 64 + 32 * (generation - 1), 8
        with self.store.stage(name, overwrite=True) as staging:
            engine_dir = self.store.write_contents(
                staging, [np.full((side, side, 3), 30 * i, np.uint8) for i in range(frames)],
                np.zeros((frames, 478, 2), np.float32))
            (engine_dir / "fake.json").write_text('{"frames": 8}')
            (staging / MANIFEST).write_text(
                f'{{"format": 1, "avatar_id": "{name}", "engine": "fake", "engine_version": 1, "fps": 25.0, '
                f'"frames": {frames}, "width": {side}, "height": {side}, "bbox_shift": 0}}')
        status = {"phase": "Ready", "observedGeneration": generation, "frames": frames, "engine": "fake",
                  "reason": "Preprocessed", "message": "built by the test"}
        self.cluster.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "avatars", name, {"status": status})


@pytest.fixture
def replicas(cluster: Cluster, namespace: str, volume: Path, tmp_path: Path) -> Iterator[Replicas]:
    cluster.wait_crd_established("renderjobs.musetalk.io")
    kubeconfig = service_account_kubeconfig(cluster, namespace, "musetalk-server", tmp_path / "server.kubeconfig")
    env = {"KUBECONFIG": str(kubeconfig), "PYTHONWARNINGS": "ignore:Unverified HTTPS request"}
    servers = [ServerProcess(volume, settings={**SETTINGS, "namespace": namespace, "replica_name": f"replica-{i}"},
                             engine={"delay_s": FRAME_DELAY_S}, env=env, drain=True) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(ServerProcess.start, servers))
    try:
        with Nginx([f"127.0.0.1:{s.port}" for s in servers], tmp_path / "nginx") as balancer, \
                AvatarBuilder(cluster, namespace, volume):
            yield Replicas(servers, balancer, namespace, volume)
            print(balancer.log()[-3000:])
    finally:
        for server in servers:
            server.__exit__()
        for server in servers:  # pytest shows them when the test failed
            print(f"--- {server.log.name}\n{server.log.read_text(errors='replace')[-3000:]}")


def preprocess(url: str, avatar_id: str, **data: str) -> httpx.Response:
    video = media("vr_face2.mp4")
    return httpx.post(f"{url}/avatars/preprocess", data={"avatar_id": avatar_id, **data}, timeout=60,
                      files={"video_file": (video.name, video.read_bytes(), "video/mp4")})


def submit_job(url: str, avatar_id: str, audio: Path = SPEECH) -> httpx.Response:
    return httpx.post(f"{url}/inference/batch/{avatar_id}", params={"async": "true"}, timeout=30,
                      files={"audio_file": (audio.name, audio.read_bytes(), "audio/wav")})


def job_resource(cluster: Cluster, ns: str, job_id: str) -> dict[str, Any]:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, JOBS, job_id)


def first_frame_side(url: str, avatar_id: str) -> int | None:
    """The width of the first frame a stream of `avatar_id` shows, or None on 404."""
    with httpx.stream("POST", f"{url}/inference/stream/{avatar_id}", timeout=30,
                      files={"audio_file": (SPEECH.name, SPEECH.read_bytes(), "audio/wav")}) as response:
        if response.status_code == 404:
            assert response.read() and response.json()["code"] == "avatar_not_found"
            return None
        assert response.status_code == 200, response.read()
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            end = data.find(b"\xff\xd9")
            if data.find(b"\xff\xd8") >= 0 and end > 0:
                jpeg = data[data.find(b"\xff\xd8"): end + 2]
                return int(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[1])
    raise AssertionError("the stream ended before its first frame")


def test_a_job_is_followed_through_any_replica_and_outlives_a_kill_9(cluster: Cluster, replicas: Replicas) -> None:
    ns, lb = replicas.namespace, replicas.balancer.url
    assert preprocess(lb, "anchor").status_code == 200

    # 1. Submitted and followed through the balancer: every poll lands on whichever replica it lands on.
    accepted = submit_job(lb, "anchor")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    answered_by, progress = set(), []
    deadline = time.monotonic() + 60
    while (poll := httpx.get(f"{lb}/jobs/{job_id}", timeout=10)).json()["state"] != "done":
        assert poll.status_code == 200 and poll.json()["state"] in ("queued", "running"), poll.text
        answered_by.add(poll.headers["x-replica"])
        progress.append(poll.json()["progress"]["frames_done"])
        assert time.monotonic() < deadline, poll.text
        time.sleep(0.2)
    answered_by.add(poll.headers["x-replica"])
    assert len(answered_by) == 3, answered_by  # round robin: every replica answered for the one job
    assert progress == sorted(progress) and poll.json()["progress"] == {"frames_done": 125, "frames_total": 125}
    result = httpx.get(f"{lb}/jobs/{job_id}/result", timeout=30)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert result.content[4:8] == b"ftyp" and result.headers["x-frame-count"] == "125"
    # `kubectl get renderjobs`, as the API server prints it.
    row = cluster.table(ns, JOBS)[job_id]
    assert (row["State"], row["Avatar"], row["Done"], row["Frames"]) == ("done", "anchor", 125, 125)

    # 2. Its replica killed with `kill -9` mid-render: another takes it over within the lease.
    job_id = submit_job(lb, "anchor", LONG_SPEECH).json()["job_id"]
    running = eventually(lambda: (r := job_resource(cluster, ns, job_id))["status"].get("framesDone", 0) > 10 and r,
                         timeout=30, what="the job rendering")
    owner = running["status"]["owner"]
    replicas.named(owner).kill()
    killed_at = time.monotonic()
    taken = eventually(lambda: (r := job_resource(cluster, ns, job_id))["status"]["owner"] != owner and r,
                       timeout=LEASE_S + 2 * HEARTBEAT_S + SLACK_S + 5, what="another replica holding it")
    took = time.monotonic() - killed_at
    assert took <= LEASE_S + 2 * HEARTBEAT_S + SLACK_S, took  # the documented bound
    assert taken["status"]["attempts"] == 2 and taken["status"]["message"] == f"taken over from {owner}"
    print(f"taken over {took:.1f} s after the kill -9 (lease {LEASE_S} s, heartbeat {HEARTBEAT_S} s)")
    eventually(lambda: job_resource(cluster, ns, job_id)["status"]["state"] == "done", timeout=90, what="done")
    done = httpx.get(f"{lb}/jobs/{job_id}", timeout=10).json()
    assert done["state"] == "done" and done["error"] is None and done["progress"]["frames_done"] == 1500
    result = httpx.get(f"{lb}/jobs/{job_id}/result", timeout=30)
    assert result.status_code == 200 and result.content[4:8] == b"ftyp"
    # None stays running, and the dead replica's partial file went with the takeover's end.
    states = {r["metadata"]["name"]: r["status"]["state"]
              for r in cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, JOBS)["items"]}
    assert set(states.values()) == {"done"}, states
    assert sorted(p.name for p in (replicas.volume / "jobs").iterdir()) == sorted(
        f"{name}-{1 if name != job_id else 2}.mp4" for name in states)

    # 3. DELETE through the balancer discards it, whichever replica answers.
    gone = httpx.delete(f"{lb}/jobs/{job_id}", timeout=10)
    assert gone.status_code == 200 and gone.json()["state"] == "done"
    assert httpx.get(f"{lb}/jobs/{job_id}", timeout=10).json()["code"] == "job_not_found"

    # 4. Cancelled through whichever replica: its holder stops within a heartbeat, its files go.
    job_id = submit_job(lb, "anchor", LONG_SPEECH).json()["job_id"]
    eventually(lambda: job_resource(cluster, ns, job_id)["status"].get("framesDone", 0) > 10, timeout=30,
               what="the job rendering")
    cancelled = httpx.delete(f"{lb}/jobs/{job_id}", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    eventually(lambda: not list((replicas.volume / "jobs").glob(f"{job_id}*")), timeout=HEARTBEAT_S + SLACK_S,
               what="the cancelled job's files gone")
    stopped_at = job_resource(cluster, ns, job_id)["status"]["framesDone"]
    assert stopped_at < 1500 and job_resource(cluster, ns, job_id)["status"]["state"] == "cancelled"
    refused = httpx.get(f"{lb}/jobs/{job_id}/result", timeout=10)
    assert refused.status_code == 409 and refused.json()["code"] == "job_failed"


def test_a_delete_or_overwrite_through_one_replica_reaches_the_others(cluster: Cluster, replicas: Replicas) -> None:
    ns, lb = replicas.namespace, replicas.balancer.url
    for name in ("keep", "gone", "kubectl-gone"):
        assert preprocess(lb, name).status_code == 200
    one, others = replicas.servers[0], [s.url for s in replicas.servers[1:]]
    for url in others:  # each holds every avatar in memory
        assert {first_frame_side(url, n) for n in ("keep", "gone", "kubectl-gone")} == {64}

    def seen_everywhere(avatar_id: str, side: int | None, since: float) -> float:
        """Seconds from `since` until every other replica shows `side` (None: 404), and keeps to it."""
        for url in others:
            eventually(lambda u=url: first_frame_side(u, avatar_id) == side, timeout=RECHECK_S + SLACK_S + 5,
                       what=f"{avatar_id} at {url}")
        took = time.monotonic() - since
        assert all(first_frame_side(url, avatar_id) == side for url in others)  # never the old one again
        return took

    # Deleted through one replica: the files stay on the volume (no operator here removes them),
    # the others stop serving it all the same.
    start = time.monotonic()
    assert httpx.delete(f"{one.url}/avatars/gone", timeout=10).status_code == 200
    assert seen_everywhere("gone", None, start) <= RECHECK_S + SLACK_S
    assert (replicas.volume / "avatars" / "gone" / MANIFEST).is_file()
    for url in others:
        assert httpx.get(f"{url}/avatars/gone", timeout=10).json()["code"] == "avatar_not_found"

    # `kubectl delete avatar`: the same.
    start = time.monotonic()
    cluster.delete_avatar(ns, "kubectl-gone")
    assert seen_everywhere("kubectl-gone", None, start) <= RECHECK_S + SLACK_S

    # Overwritten through one replica: the others serve the new one (96 px) once it is Ready.
    overwritten = preprocess(one.url, "keep", overwrite="true")
    assert overwritten.status_code == 200 and overwritten.json()["info"]["width"] == 96, overwritten.text
    assert seen_everywhere("keep", 96, time.monotonic()) <= RECHECK_S + SLACK_S


@dataclass
class Outcome:
    """One request of the steady load, as its client saw it."""

    kind: str
    status: int
    replica: str = ""
    started: float = 0.0
    ended: float = 0.0
    frames: int = 0
    expected: int = 0
    error_code: str | None = None
    retries: int = 0
    notes: list[str] = field(default_factory=list)


def paced_stream(lb: str, avatar_id: str) -> Outcome:
    """A paced stream; refused work (429 busy) is retried after its Retry-After, as the docs say."""
    retries = 0
    outcome, retry_after = one_paced_stream(lb, avatar_id)
    while outcome.status == 429 and retries < 10:
        time.sleep(min(retry_after, 2.0))
        outcome, retry_after = one_paced_stream(lb, avatar_id)
        retries += 1
    outcome.retries = retries
    return outcome


def one_paced_stream(lb: str, avatar_id: str) -> tuple[Outcome, float]:
    started = time.monotonic()
    with httpx.stream("POST", f"{lb}/inference/stream/{avatar_id}", params={"realtime": "true"}, timeout=60,
                      files={"audio_file": (SPEECH.name, SPEECH.read_bytes(), "audio/wav")}) as response:
        body = response.read()
    outcome = Outcome("stream", response.status_code, response.headers.get("x-replica", ""), started,
                      time.monotonic())
    if response.status_code == 200:
        outcome.frames = body.count(b"X-Frame-Index:")
        outcome.expected = int(response.headers["x-frame-count"])
        if (code := re.search(rb'"code":\s*"([a-z_]+)"', body[-400:])) is not None:
            outcome.error_code = code.group(1).decode()
    return outcome, float(response.headers.get("retry-after", "1"))


def test_a_rolling_restart_under_load_loses_nothing_admitted(cluster: Cluster, replicas: Replicas) -> None:
    lb = replicas.balancer.url
    assert preprocess(lb, "anchor").status_code == 200
    stopping: dict[str, tuple[float, float]] = {}  # replica -> (SIGTERM sent, process gone)
    outcomes: list[Outcome] = []
    done = threading.Event()

    def streams() -> None:
        while not done.is_set():
            outcomes.append(paced_stream(lb, "anchor"))

    def preprocesses() -> None:
        n = 0
        while not done.is_set():
            n += 1
            started = time.monotonic()
            response, retries = preprocess(lb, f"load-{n}"), 0
            while response.status_code in (429, 503) and retries < 5:  # refused work, retried as the docs say
                time.sleep(float(response.headers.get("retry-after", "1")))
                response, retries = preprocess(lb, f"load-{n}"), retries + 1
            outcomes.append(Outcome("preprocess", response.status_code, response.headers.get("x-replica", ""),
                                    started, time.monotonic(), retries=retries))
            time.sleep(0.3)

    with ThreadPoolExecutor(4) as pool:
        load = [pool.submit(streams), pool.submit(streams), pool.submit(streams), pool.submit(preprocesses)]
        time.sleep(3)
        # A long async job on the first replica to stop: handed back at its SIGTERM, finished by another.
        job = submit_job(replicas.servers[0].url, "anchor", LONG_SPEECH)
        assert job.status_code == 202, job.text
        for server in replicas.servers:  # one at a time, each back before the next
            name = f"replica-{replicas.servers.index(server)}"
            sent = time.monotonic()
            assert server.stop(timeout=GRACE_S + 15) == 0
            stopping[name] = (sent, time.monotonic())
            server.start()
            time.sleep(2)
        time.sleep(3)
        done.set()
        for future in load:
            future.result(timeout=120)

    job_id = job.json()["job_id"]
    finished = eventually(lambda: (r := httpx.get(f"{lb}/jobs/{job_id}", timeout=10).json())["state"] == "done" and r,
                          timeout=90, what=f"the handed-back job done ({job_resource(cluster, replicas.namespace, job_id)})")
    assert finished["error"] is None and finished["progress"]["frames_done"] == 1500
    resource = job_resource(cluster, replicas.namespace, job_id)["status"]
    # Handed back at each SIGTERM it met (at least replica-0's), which costs no attempt: never lost.
    assert resource["attempts"] == 1 and "handed back by replica-" in resource["message"], resource
    t0 = min(o.started for o in outcomes)
    for o in sorted(outcomes, key=lambda o: o.started):  # the timeline, shown when the test fails
        print(f"{o.started - t0:6.1f} s +{o.ended - o.started:5.1f} s {o.kind:10} {o.status} {o.replica:9} "
              f"frames {o.frames}/{o.expected} {o.error_code or ''} retries {o.retries}")
    print({name: (round(sent - t0, 1), round(gone - t0, 1)) for name, (sent, gone) in stopping.items()})
    assert not [o for o in outcomes if o.status >= 500], [o for o in outcomes if o.status >= 500]
    assert {o.kind for o in outcomes} == {"stream", "preprocess"}
    assert all(o.status == 200 for o in outcomes), [o for o in outcomes if o.status != 200]
    cut = []
    for o in (o for o in outcomes if o.kind == "stream"):
        if o.frames == o.expected and o.error_code is None:
            continue
        # Cut short: only a stopped replica's own streams, in flight across its SIGTERM, and each
        # ends with its error part after the grace.
        sent, gone = stopping[o.replica]
        assert o.error_code == "not_ready" and o.started < sent < o.ended, o
        # Revoked after the grace less the flush (api/shutdown.py), and whole before its process exited.
        assert sent + GRACE_S - FLUSH_S <= o.ended <= gone + 0.5, o
        cut.append(o)
    streams_done = [o for o in outcomes if o.kind == "stream" and o not in cut]
    assert len(streams_done) >= 6, outcomes
    print(f"{len(outcomes)} requests: {len(streams_done)} streams whole, {len(cut)} cut by their replica's "
          f"SIGTERM, {sum(o.kind == 'preprocess' for o in outcomes)} preprocesses "
          f"({sum(o.retries for o in outcomes)} retries)")

