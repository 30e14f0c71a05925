
"""Schema-driven fuzzing: schemathesis generates requests from the service's own /openapi.json
and sends them to a real server on loopback. Shared by the bounded test and bench/fuzz_bench.py.

The bar is ours, not the schema's (its error declarations are being rewritten): no 5xx, no
dropped connection, and every error in the one shape `{"detail": <text>, "code": <code>}`.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

__all__ = ["FuzzReport", "fuzz", "error_shape_problem"]

REQUEST_TIMEOUT_S = 60.0
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
INFERENCE_PREFIX = "/inference/"


@dataclass
class FuzzReport:
    cases: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_operation: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    bad_shape: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return self.server_errors + self.dropped + self.bad_shape


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


def fuzz(base_url: str, *, cases_per_operation: int, seed: int, headers: dict[str, str] | None = None,
         avatar_id: str | None = None) -> FuzzReport:
    """Send up to `cases_per_operation` positive and as many negative cases to every operation.

    With `avatar_id` (an avatar that exists), the inference operations get as many positive
    cases again on it, so generated bodies get past the 404 and reach the audio decoder.
    """
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        passes: list[tuple[GenerationMode, dict[str, str] | None]] = [(mode, None) for mode in MODES]
        if avatar_id and operation.path.startswith(INFERENCE_PREFIX):
            passes.append((GenerationMode.POSITIVE, {"avatar_id": avatar_id}))
        for mode, path_parameters in passes:
            _fuzz_operation(operation, mode, path_parameters, base_url, session, report, cases_per_operation,
                            seed, headers or {})
    return report


def _fuzz_operation(operation, mode, path_parameters, base_url, session, report, n, seed, headers) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @hypothesis.seed(seed)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case) -> None:
        report.cases += 1
        report.by_operation[label] += 1
        where = f"{label} ({mode.value}) {case.formatted_path}"
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.exceptions.RequestException as e:
            report.dropped.append(f"{where}: {type(e).__name__}: {e}")
            return
        report.by_status[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors.append(f"{where}: {response.status_code} {response.content[:200]!r}")
        if response.status_code >= 400:
            problem = error_shape_problem(response.status_code, _content_type(response), response.content)
            if problem:
                report.bad_shape.append(f"{where}: {problem}")

    # Unsatisfiable: nothing to make invalid (negative cases of an operation without parameters).
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()


def _content_type(response) -> str:
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    return value[0] if isinstance(value, list) else value  # schemathesis keeps every header as a list
