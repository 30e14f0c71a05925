"""A real Prometheus scrapes three real server processes and the operator: every query on the
chart's Grafana dashboard returns data, and the autoscaler's queries (the adapter's, as the chart
renders its rule, and KEDA's) return each pod's load.

The servers run the fake engine in local mode, with real-time sessions and per-frame device-call
reports switched on (tests/fakes.py), so that the GPU engine's panels (device batch size) get data
too. The operator runs against the real apiserver; the test plays the kubelet for its Jobs.
Prometheus labels each target as a ServiceMonitor's scrape would (namespace, service, pod).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from k8s_real_helpers import ROOT, Cluster, Operator, eventually
from websockets.sync.client import connect

from chart.chart_helpers import render
from helpers import media
from prometheus_process import SCRAPE_INTERVAL_S, PrometheusProcess, Target, finite
from server_process import ServerProcess
from servers import post_audio, preprocess
from testkit.mediatools import first_frames, silent_wav, write_video

CHART_VALUES = {"preprocess": {"backoffLimit": 0}}  # a Job's first failure ends it
NAMESPACE, SERVICE = "lipsync", "musetalk-server"  # what the scrape labels say, as in a cluster
PODS = [f"musetalk-server-{i}" for i in range(3)]
DASHBOARD = ROOT / "charts" / "musetalk" / "dashboards" / "musetalk.json"
# Grafana's own variables, as it would fill them for a 5-minute view at a 15 s step.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
REPORT = json.dumps({"message": "Avatar processed successfully", "avatar_id": "x", "info": {"frames": 10, "fps": 25.0}})
NO_FACE = json.dumps({"detail": "no face found in the first 40 frames", "code": "no_face_detected"})
SCRAPES_S = 2.5 * SCRAPE_INTERVAL_S  # long enough for every target to be scraped again


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, rows' panels included, with
    the dashboard's template variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    variables = dict(GRAFANA_BUILTINS)
    for var in board.get("templating", {}).get("list", []):
        if var["type"] != "datasource":  # a data source never appears in an expression
            variables[f"${var['name']}"] = str(var.get("current", {}).get("value") or ".+")
    panels = [p for top in board["panels"] for p in [top, *top.get("panels", [])]]
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):
                expr = expr.replace(name, variables[name])
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know in {expr}"
            queries.append((panel["title"], expr))
    return queries


def rendered_autoscaling(mode: str) -> dict[str, Any]:
    """The chart's autoscaling objects as real Helm renders them in `mode`."""
    values = {"autoscaling": {"enabled": True, "mode": mode, "targetQueueDepth": 2}}
    return {d["kind"]: d for d in render(values, namespace=NAMESPACE)}


def adapter_query(rule: dict[str, Any], pods: list[str]) -> str:
    """The query the Prometheus adapter sends for an HPA's Pods metric: its rule's metricsQuery
    with the series, the HPA's namespace and pods, and grouping by pod."""
    series = re.fullmatch(r"(\w+)\{.*\}", rule["seriesQuery"]).group(1)
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


@contextmanager
def held_stream(url: str, audio: Path) -> Iterator[None]:
    """A paced stream (?realtime=true) running in the background while the block runs."""
    started, status = threading.Event(), []

    def play() -> None:
        with audio.open("rb") as f, httpx.stream("POST", f"{url}/inference/stream/a", params={"realtime": "true"},
                                                  files={"audio_file": (audio.name, f)}, timeout=60) as r:
            status.append(r.status_code)
            started.set()
            for _ in r.iter_bytes():
                pass

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    assert started.wait(20), "the held stream never answered"
    assert status == [200]
    yield
    thread.join(30)


def realtime_session(url: str) -> None:
    """Open a session, speak 0.4 s, end the utterance, take 20 frames, leave."""
    with connect(url.replace("http", "ws") + "/inference/realtime/a", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(bytes(2 * 6400))
        ws.send(json.dumps({"type": "end"}))
        for _ in range(20):
            ws.recv(timeout=10)


def renders(url: str, short: Path) -> None:
    """A batch MP4 and a paced stream."""
    with httpx.Client(base_url=url, timeout=60) as client:
        r = post_audio(client, "/inference/batch/a", short)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        r = post_audio(client, "/inference/stream/a", short, params={"realtime": "true"})
        assert r.status_code == 200 and r.content.endswith(b"--frame--\r\n")


def refusal(url: str, short: Path, held: Path) -> None:
    """A paced request refused (429 busy) while another runs: one at a time (max_realtime_streams)."""
    with held_stream(url, held), httpx.Client(base_url=url, timeout=60) as client:
        r = post_audio(client, "/inference/stream/a", short, params={"realtime": "true"})
        assert r.status_code == 429 and r.json()["code"] == "busy"


def make_avatar(url: str, avatar_id: str, clip: Path) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        assert preprocess(client, avatar_id, clip).status_code == 200


def one_round(servers: list[ServerProcess], media_files: dict[str, Path], preprocess_as: str | None = None) -> None:
    """Work that puts data behind every server panel, the replicas side by side (paced work one
    at a time on each: max_realtime_streams is 1): on each a batch MP4 and a paced stream; then
    on the first a refused paced request, on the second a real-time session, on the third a
    preprocess if asked."""
    short, held = media_files["short"], media_files["held"]

    then = [lambda: refusal(servers[0].url, short, held), lambda: realtime_session(servers[1].url),
            lambda: preprocess_as and make_avatar(servers[2].url, preprocess_as, media_files["clip"])]

    def replica(srv: ServerProcess, more: Callable[[], object]) -> None:
        renders(srv.url, short)
        more()

    with ThreadPoolExecutor(len(servers)) as pool:
        for done in [pool.submit(replica, srv, more) for srv, more in zip(servers, then, strict=True)]:
            done.result(timeout=60)


def operator_jobs(cluster: Cluster, ns: str) -> None:
    """One Avatar whose Job succeeds, one whose Job fails: the operator's counters and timings."""
    for name, exit_code, message in (("anchor", 0, REPORT), ("wall", 2, NO_FACE)):
        cluster.create_avatar(ns, name, videoPath=f"uploads/{name}.mp4", engine="lite")
        pod = eventually(lambda n=name: cluster.one_pod(ns, f"avatar-{n}-g1"), what=f"{name}'s Job pod")
        cluster.set_pod_running(ns, pod["metadata"]["name"])
        cluster.finish_pod(ns, pod["metadata"]["name"], exit_code=exit_code, message=message)
    eventually(lambda: cluster.phase(ns, "anchor") == "Ready", what="anchor Ready")
    eventually(lambda: cluster.phase(ns, "wall") == "Failed", what="wall Failed")


def start_servers(stack: ExitStack, results: Path) -> list[ServerProcess]:
    """The replicas, started side by side (each takes seconds to import), sharing one folder."""
    results.parent.mkdir()
    replicas = [ServerProcess(results, settings={"max_realtime_streams": 1},
                              engine={"live": True, "device_calls": True}) for _ in PODS]
    with ThreadPoolExecutor(len(replicas)) as pool:
        starts = [pool.submit(srv.__enter__) for srv in replicas]
    for srv in replicas:
        stack.push(srv.__exit__)  # stops those that did start, whatever became of the others
    return [start.result() for start in starts]


@pytest.fixture
def media_files(tmp_path: Path) -> dict[str, Path]:
    return {"clip": write_video(first_frames(media("vr_face2.mp4"), 10), tmp_path / "face.mp4", "libx264", 25.0,
                                fmt="mp4"),
            "short": silent_wav(tmp_path / "short.wav", 1.0),
            "held": silent_wav(tmp_path / "held.wav", 2.5)}


def test_every_dashboard_query_and_the_autoscalers_queries_return_data(
        cluster: Cluster, namespace: str, operator: Operator, tmp_path: Path, media_files: dict[str, Path]) -> None:
    queries = dashboard_queries()
    objects = {mode: rendered_autoscaling(mode) for mode in ("hpa", "keda")}
    rules = yaml.safe_load(objects["hpa"]["ConfigMap"]["data"]["rules.yaml"])["rules"]
    triggers = objects["keda"]["ScaledObject"]["spec"]["triggers"]
    with ExitStack() as stack:
        servers = start_servers(stack, tmp_path / "servers" / "results")
        targets = [Target("musetalk-server", f"127.0.0.1:{srv.port}",
                          {"namespace": NAMESPACE, "service": SERVICE, "pod": pod}) for srv, pod in
                   zip(servers, PODS, strict=True)]
        targets.append(Target("musetalk-operator", f"127.0.0.1:{operator.env['MUSETALK_OPERATOR_METRICS_PORT']}",
                              {"namespace": NAMESPACE, "service": "musetalk-operator", "pod": "musetalk-operator-0"}))
        prom = stack.enter_context(PrometheusProcess(tmp_path, targets))
        pool = stack.enter_context(ThreadPoolExecutor(2))
        # One volume, as in a cluster: the avatar one replica makes, all serve.
        avatar = pool.submit(make_avatar, servers[2].url, "a", media_files["clip"])
        prom.wait_targets_up()
        # The operator's Jobs, meanwhile (their counters must move after the first scrape).
        jobs = pool.submit(operator_jobs, cluster, namespace)
        avatar.result(timeout=120)

        # 1. A first round makes the labelled series; the second, once scraped, makes them move
        # (a rate needs two samples that differ; the preprocess histogram's first was "a").
        one_round(servers, media_files)
        time.sleep(SCRAPES_S)
        one_round(servers, media_files, preprocess_as="b")
        jobs.result(timeout=60)

        # 2. The autoscalers' queries once every pod is idle, then while the first replica holds a
        # paced stream: its load, and the others' nothing.
        def load_per_pod(at: float) -> dict[str, float]:
            return {r["metric"]["pod"]: r["value"] for r in prom.query(adapter_query(rules[0], PODS), at)}

        idle = eventually(lambda: (got := load_per_pod(time.time())) and not any(got.values()) and got,
                          timeout=5, what="every pod idle in Prometheus")
        assert sorted(idle) == PODS
        with held_stream(servers[0].url, media_files["held"]):
            def loaded() -> tuple[float, dict[str, float]] | None:
                at = time.time()
                per_pod = load_per_pod(at)
                return (at, per_pod) if per_pod.get(PODS[0], 0) > 0 else None
            at, per_pod = eventually(loaded, timeout=2.5, what="the first pod's load in Prometheus")
            assert sorted(per_pod) == PODS and per_pod[PODS[1]] == per_pod[PODS[2]] == 0, per_pod
            [keda_total] = prom.query(triggers[0]["metadata"]["query"], at)
            assert keda_total["value"] == pytest.approx(sum(per_pod.values()))
            queue = prom.query(adapter_query(rules[1], PODS), at)
            assert sorted(r["metric"]["pod"] for r in queue) == PODS and finite(queue)
            [keda_queue] = prom.query(triggers[1]["metadata"]["query"], at)
            assert finite([keda_queue])
        time.sleep(SCRAPES_S)

        # 3. Every panel's every query.
        empty = [(title, expr, prom.query(expr)) for title, expr in queries]
        empty = [(title, expr, got) for title, expr, got in empty if not finite(got)]
        assert not empty, "dashboard queries without data:\n" + "\n".join(f"{t}: {e} -> {g}" for t, e, g in empty)
        # The operator's panels show what happened, not a counter that never moved.
        assert prom.query("sum(increase(musetalk_operator_jobs_started_total[1h]))")[0]["value"] > 0
        assert prom.query("sum(increase(musetalk_operator_jobs_failed_total[1h]))")[0]["value"] > 0
        assert prom.query('sum(increase(musetalk_scheduler_refused_total{kind="paced"}[1h]))')[0]["value"] > 0
