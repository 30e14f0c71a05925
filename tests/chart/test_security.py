"""Every container the chart runs, and every Job the operator creates, is locked down: non-root,
read-only root filesystem (with an emptyDir for /tmp where it writes), no capabilities, no
privilege escalation, the runtime's default seccomp profile."""

from __future__ import annotations

from typing import Any

import pytest
from chart_helpers import FULL, GPU_OFF, container, find, render

from musetalk_operator import jobs
from musetalk_operator.config import OperatorConfig

VARIANTS = {"defaults": {}, "gpu-off": GPU_OFF, "everything-on": FULL}
# Containers that write temporary files (uploads being parsed, downloads, the HF cache).
WRITES_TMP = {"server", "weights", "operator", jobs.CONTAINER}


def _pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            out.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Pod":
            out.append((doc["metadata"]["name"], doc["spec"]))
    return out


def _check_pod(where: str, pod: dict[str, Any]) -> list[str]:
    pod_ctx = pod.get("securityContext") or {}
    seen = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        ctx = c.get("securityContext") or {}
        name = f"{where}/{c['name']}"
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"] and not ctx["capabilities"].get("add"), name
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile"))
        assert seccomp == {"type": "RuntimeDefault"}, name
        assert not ctx.get("privileged"), name
        if c["name"] in WRITES_TMP:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{name}: no writable /tmp"
        seen.append(c["name"])
    return seen


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_chart_container_is_locked_down(values: dict) -> None:
    docs = render(values)
    seen = [name for where, pod in _pods(docs) for name in _check_pod(where, pod)]
    # models.download is on by default; the weights init container only comes with the GPU.
    expected = {"server", "operator", "health"} | ({"weights"} if values is not GPU_OFF else set())
    assert set(seen) == expected


def test_the_operators_job_is_locked_down_too() -> None:
    docs = render(FULL)
    env = {e["name"]: e["value"] for e in container(find(docs, "Deployment", "musetalk-operator"))["env"] if "value" in e}
    for cfg in (OperatorConfig.from_env(env), OperatorConfig.from_env({})):  # chart-configured, and bare defaults
        avatar = {"metadata": {"name": "demo", "namespace": "lipsync", "uid": "u", "generation": 1},
                  "spec": {"videoUrl": "https://example.com/demo.mp4"}}
        job = jobs.build_job(avatar, cfg)
        assert _check_pod("job", job["spec"]["template"]["spec"]) == [jobs.CONTAINER]
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
