"""Render the Helm chart with real Helm (helm-python-sdk, offline) for the chart tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "musetalk"
KUBE_VERSION = "1.30"

FULL = {  # everything optional switched on
    "gpu": {"enabled": True, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "ingress": {"enabled": True, "className": "nginx",
                "hosts": [{"host": "lipsync.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "lipsync-tls", "hosts": ["lipsync.example.com"]}]},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "apiKey": {"value": "s3cret"},
    "models": {"download": True},
    "server": {"replicaCount": 3},
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


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''} rendered"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
