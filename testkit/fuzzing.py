"""Schema-driven fuzzing: schemathesis (its CLI, `--checks all`) generates requests from the
service's own /openapi.json, sends them to a real server on loopback, and checks every answer
against the schema: status codes, content types, headers, bodies, `Allow`, that schema-valid
requests are accepted and invalid ones refused. Shared by the bounded test (tests/api/test_fuzz.py)
and bench/fuzz_bench.py.

One refusal is expected rather than a failure: random bytes sent as a video or an audio file
answered 415 `unsupported_media`, since no schema can say "decodable media". It is told to
schemathesis as an accepted status for schema-valid requests to the three upload operations, and
counted. On top of schemathesis' checks, every error answer must be the one body
`{"detail": <text>, "code": <code>}`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FuzzReport", "fuzz", "error_shape_problem", "MEDIA_OPERATIONS", "OTHER_METHODS"]

# The operations that take a video or audio file: schema-valid random bytes there are refused with 415.
MEDIA_OPERATIONS = ("POST /avatars/preprocess", "POST /inference/stream/{avatar_id}",
                    "POST /inference/batch/{avatar_id}")
_POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default
_CONFIG = """
# First, as the first block that applies to an operation wins (and one block's filters are
# alternatives: a name names method and path together). An SDP offer is a string to the schema,
# but only a real offer is accepted: any other string is answered 422 invalid_sdp, as a non-media
# upload is answered 415 below.
[[operations]]
include-name-regex = "^POST /inference/webrtc/"
checks.positive_data_acceptance.expected-statuses = {sdp_statuses}

[[operations]]
include-path-regex = "^/(avatars/preprocess|inference/(stream|batch)/[{{]avatar_id[}}])$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = {statuses}
"""
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")  # the serializer of application/sdp
REQUEST_TIMEOUT_S = 60.0
OTHER_METHODS = "methods a path does not have (405 and Allow)"


@dataclass
class FuzzReport:
    cases: int = 0  # schemathesis' count of generated test cases
    operations: tuple[int, int] = (0, 0)  # (tested, in the schema)
    by_status: Counter = field(default_factory=Counter)
    by_operation: Counter = field(default_factory=Counter)  # "METHOD /path", or OTHER_METHODS
    media_refused: int = 0  # schema-valid random bytes as media, answered 415 unsupported_media
    failures: list[str] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0


def error_shape_problem(status: int, content_type: str, body: bytes) -> str | None:
    """None when an error response is `{"detail": str, "code": str}` (both non-empty), else why not."""
    if not content_type.startswith("application/json"):
        return f"{status} with content type {content_type!r}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"{status} with a body that is not JSON"
    if not isinstance(data, dict) or set(data) != {"detail", "code"}:
        return f"{status} with keys {sorted(data) if isinstance(data, dict) else type(data).__name__}"
    if not all(isinstance(data[k], str) and data[k] for k in ("detail", "code")):
        return f"{status} with an empty or non-text detail or code"
    return None


def fuzz(base_url: str, workdir: Path, *, max_examples: int, seed: int,
         headers: dict[str, str] | None = None) -> FuzzReport:
    """Run `schemathesis run --checks all` against `base_url`, every phase, one worker; the
    reports go to `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(_CONFIG.format(statuses=json.dumps([*_POSITIVE_ACCEPTED, "415"]),
                                     sdp_statuses=json.dumps([*_POSITIVE_ACCEPTED, "422"])))
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{base_url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples),
               "--seed", str(seed), "--workers", "1", "--request-timeout", str(REQUEST_TIMEOUT_S),
               "--report", "json,ndjson", "--report-json-path", str(workdir / "report.json"),
               "--report-ndjson-path", str(workdir / "events.ndjson"), "--continue-on-failure", "--no-color"]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    run = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                         env=dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS)))
    (workdir / "output.txt").write_text(run.stdout + run.stderr)
    report = FuzzReport(exit_code=run.returncode)
    with urllib.request.urlopen(f"{base_url}/openapi.json") as answer:
        spec = json.load(answer)
    documented = {f"{m.upper()} {path}" for path, ops in spec["paths"].items() for m in ops}
    if not (workdir / "report.json").exists():
        report.failures.append(f"schemathesis exited {run.returncode} without a report: {run.stderr[-2000:]}")
        return report
    _read_summary(json.loads((workdir / "report.json").read_text()), report)
    with (workdir / "events.ndjson").open() as events:
        for line in events:
            event = json.loads(line)
            if "ScenarioFinished" in event:
                _read_scenario(event["ScenarioFinished"]["recorder"], documented, report)
    return report


def _read_summary(summary: dict, report: FuzzReport) -> None:
    report.cases = summary["test_cases"]["generated"]
    report.operations = (summary["operations"]["tested"], summary["operations"]["total"])
    report.seconds = summary["running_time"]
    report.failures += [f"schemathesis error: {json.dumps(e)[:500]}" for e in summary["errors"]]
    if report.operations[0] != report.operations[1]:
        report.failures.append(f"only {report.operations[0]} of {report.operations[1]} operations were tested")


def _read_scenario(recorder: dict, documented: set[str], report: FuzzReport) -> None:
    """Count one scenario's cases and answers; its failed checks and malformed errors are failures."""
    for case_id, case in recorder.get("cases", {}).items():
        value = case["value"]
        operation = f"{value['method']} {value['path']}"
        report.by_operation[operation if operation in documented else OTHER_METHODS] += 1
        response = (recorder.get("interactions", {}).get(case_id) or {}).get("response")
        if response is None:
            continue
        status = response["status_code"]
        report.by_status[status] += 1
        body = base64.b64decode(response.get("content", {}).get("$base64", "")) if response.get("content") else b""
        mode = value.get("meta", {}).get("generation", {}).get("mode")
        if status == 415 and mode == "positive" and operation in MEDIA_OPERATIONS:
            report.media_refused += 1
        for check in recorder.get("checks", {}).get(case_id, []):
            if check["status"] == "failure":
                failure = check.get("failure_info", {}).get("failure", {})
                message = (failure.get("message") or "").splitlines()[:2]
                report.failures.append(f"{check['name']} ({failure.get('code')}) on {operation}: {status}; "
                                       f"{' '.join(message)}")
        if status >= 400 and value["method"] != "HEAD":
            content_type = (response.get("headers", {}).get("content-type") or [""])[0]
            problem = error_shape_problem(status, content_type, body)
            if problem:
                report.failures.append(f"{operation}: {problem}")
