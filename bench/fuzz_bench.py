"""Reliability benchmark: schema-driven fuzzing at scale, and the hostile media corpus timed.

A real server with the lite engine on loopback (in this process, on uvicorn), then:
1. schemathesis: positive and negative cases for every operation of /openapi.json, with the
   API key on (so requests pass the key check and reach validation), a fixed seed, and more
   positive cases on an existing avatar so generated audio reaches the decoder;
2. the hostile corpus of testkit/hostile_media.py through stream, batch and preprocess, each
   answer's status and code checked, and the slowest answer and the process's peak RSS noted.

Prints Markdown tables; exits 1 on any 5xx, dropped connection or malformed error.
Usage: python -m bench.fuzz_bench [--cases-per-operation 100] [--seed 12]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from musetalk_server.api import create_app
from musetalk_server.config import Settings
from testkit.fuzzing import error_shape_problem, fuzz
from testkit.hostile_media import audio_cases, video_cases
from testkit.live_server import LiveServer
from testkit.media import media

API_KEY = "bench-key"
AUDIO_ENDPOINTS = ("/inference/stream/face2", "/inference/batch/face2")


def _post(client: httpx.Client, path: str, field: str, file: Path, data: dict | None = None) -> httpx.Response:
    with file.open("rb") as f:
        return client.post(path, data=data or {}, files={field: (file.name, f, "application/octet-stream")},
                           timeout=300)


def run_corpus(client: httpx.Client, tmp: Path) -> tuple[list[tuple[str, int, int, int, float]], list[str]]:
    """Rows (kind, files, requests, 5xx, slowest s) and the failures."""
    rows, failures = [], []
    for kind, cases, targets in (("audio", audio_cases(tmp), AUDIO_ENDPOINTS), ("video", video_cases(tmp),
                                                                               ("/avatars/preprocess",))):
        sent = server_errors = 0
        slowest = 0.0
        for case in cases:
            for target in targets:
                started = time.perf_counter()
                if kind == "audio":
                    r = _post(client, target, "audio_file", case.path)
                else:
                    r = _post(client, target, "video_file", case.path, {"avatar_id": "hostile"})
                slowest = max(slowest, time.perf_counter() - started)
                sent += 1
                server_errors += r.status_code >= 500
                got = (r.status_code, r.json().get("code"))
                if got != (case.status, case.code):
                    failures.append(f"{kind}/{case.name} on {target}: {got}, expected {(case.status, case.code)}")
                problem = error_shape_problem(r.status_code, r.headers.get("content-type", ""), r.content)
                if problem:
                    failures.append(f"{kind}/{case.name} on {target}: {problem}")
        rows.append((kind, len(cases), sent, server_errors, slowest))
    return rows, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases-per-operation", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(_env_file=None, result_dir=tmp / "results", engine="lite", api_key=API_KEY)
        with LiveServer(create_app(settings)) as server, \
                httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}) as client:
            while client.get("/health/ready").status_code != 200:
                time.sleep(0.2)
            assert _post(client, "/avatars/preprocess", "video_file", media("vr_face2.mp4"),
                         {"avatar_id": "face2"}).status_code == 200
            started = time.perf_counter()
            report = fuzz(server.url, cases_per_operation=args.cases_per_operation, seed=args.seed,
                          headers={"X-API-Key": API_KEY}, avatar_id="face2")
            fuzz_s = time.perf_counter() - started
            corpus_dir = tmp / "corpus"
            corpus_dir.mkdir()
            rows, corpus_failures = run_corpus(client, corpus_dir)
            alive = client.get("/health").json()["status"] == "running"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"schemathesis, seed {args.seed}: {report.cases} cases in {fuzz_s:.0f} s\n")
    print("| operation | cases |\n|---|---:|")
    for op, n in sorted(report.by_operation.items()):
        print(f"| `{op}` | {n} |")
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(Counter(report.by_status).items()))
    print(f"\nstatuses: {statuses}")
    print(f"5xx: {len(report.server_errors)}, dropped connections: {len(report.dropped)}, "
          f"errors not in the one shape: {len(report.bad_shape)}\n")
    print("| hostile corpus | files | requests | 5xx | slowest answer |\n|---|---:|---:|---:|---:|")
    for kind, files, sent, errors, slowest in rows:
        print(f"| {kind} | {files} | {sent} | {errors} | {slowest:.2f} s |")
    print(f"\nserver still healthy afterwards: {alive}; peak RSS of the process {peak_mb:.0f} MB")
    failures = report.failures + corpus_failures + ([] if alive else ["server not healthy afterwards"])
    for line in failures[:50]:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
