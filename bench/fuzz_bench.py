"""Reliability benchmark: schema-driven fuzzing at scale, and the hostile media corpus timed.

A real server with the lite engine on loopback (in this process, on uvicorn), then:
1. schemathesis `--checks all` (testkit/fuzzing.py): every phase (coverage, fuzzing, stateful) over
   every operation of /openapi.json, with the API key on (so requests pass the key check and
   reach validation) and a fixed seed, with the avatar face2 in place; the only refusal not
   counted a failure is 415 for random bytes sent as media (no schema can say "decodable");
2. the hostile corpus of testkit/hostile_media.py through stream, batch and preprocess, each
   answer's status and code checked, and the slowest answer and the process's peak RSS noted.

Prints Markdown tables; exits 1 on any schemathesis failure, malformed error or fewer than
--min-cases cases.
Usage: python -m bench.fuzz_bench [--max-examples 100] [--seed 12] [--min-cases 1500]
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
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--min-cases", type=int, default=1500)
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
            report = fuzz(server.url, tmp / "fuzz", max_examples=args.max_examples, seed=args.seed,
                          headers={"X-API-Key": API_KEY})
            fuzz_s = time.perf_counter() - started
            # The fuzzer's stateful phase may delete face2; the corpus needs it.
            assert _post(client, "/avatars/preprocess", "video_file", media("vr_face2.mp4"),
                         {"avatar_id": "face2"}).status_code == 200
            corpus_dir = tmp / "corpus"
            corpus_dir.mkdir()
            rows, corpus_failures = run_corpus(client, corpus_dir)
            alive = client.get("/health").json()["status"] == "running"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tested, total = report.operations
    print(f"schemathesis --checks all, seed {args.seed}, --max-examples {args.max_examples}: {report.cases} cases, "
          f"{tested} of {total} operations, in {fuzz_s:.0f} s\n")
    print("| operation | requests |\n|---|---:|")
    for op, n in sorted(report.by_operation.items()):
        print(f"| `{op}` | {n} |")
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(Counter(report.by_status).items()))
    print(f"\nstatuses: {statuses}")
    print(f"failures: {len(report.failures)}; schema-valid random bytes as media refused with 415 "
          f"(expected): {report.media_refused}\n")
    print("| hostile corpus | files | requests | 5xx | slowest answer |\n|---|---:|---:|---:|---:|")
    for kind, files, sent, errors, slowest in rows:
        print(f"| {kind} | {files} | {sent} | {errors} | {slowest:.2f} s |")
    print(f"\nserver still healthy afterwards: {alive}; peak RSS of the process {peak_mb:.0f} MB")
    failures = report.failures + corpus_failures + ([] if alive else ["server not healthy afterwards"])
    if report.cases < args.min_cases:
        failures.append(f"only {report.cases} cases, fewer than {args.min_cases}")
    for line in failures[:50]:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
