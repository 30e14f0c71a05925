"""Render the Helm chart with real Helm (helm-python-sdk, offline) for the chart tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "musetalk"
KUBE_VERSION = "1.30"

# What a real 1.30 cluster with the Prometheus Operator tells Helm it serves.
CAPABILITIES_1_30 = ("v1.30.0", ("monitoring.coreos.com/v1/ServiceMonitor", "policy/v1/PodDisruptionBudget"))
CAPABILITIES_1_20 = ("v1.20.2", ())  # the real control plane of tests/k8s_real, without it

FULL = {  # everything optional switched on
    "gpu": {"enabled": True, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "ingress": {"enabled": True, "className": "nginx",
                "hosts": [{"host": "lipsync.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "lipsync-tls", "hosts": ["lipsync.example.com"]}]},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "apiKey": {"value": "s3cret"},
    "models": {"download": True},
    "server": {"replicaCount": 3, "podDisruptionBudget": {"enabled": True}, "topologySpread": {"enabled": True}},
    "preprocess": {"ttlSecondsAfterFinished": 600},
    "imagePullSecrets": ["regcred"],
}
GPU_OFF = {"gpu": {"enabled": False}}


def render(values: dict[str, Any] | None = None, namespace: str = "lipsync") -> list[dict[str, Any]]:
    """Every object the chart renders (hooks included), in template order."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name="musetalk", namespace=namespace)
    return [doc for path, text in sorted(files.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def render_on(capabilities: tuple[str, tuple[str, ...]], values: dict[str, Any] | None = None,
              namespace: str = "lipsync") -> list[dict[str, Any]]:
    """Render as an install on a server of that version serving those APIs would (`helm template
    --kube-version --api-versions`). helm-python-sdk's Chart.render has no such arguments, but the
    Helm C SDK under it takes them, so this goes one level down."""
    kube_version, api_versions = capabilities
    options = {"name": "musetalk", "namespace": namespace, "kube_version": kube_version,
               "api_versions": list(api_versions)}
    with helm.Chart.load(str(CHART)) as chart:
        files = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}),
                                               json.dumps(options)))
    return [doc for path, text in sorted(files.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''} rendered"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
