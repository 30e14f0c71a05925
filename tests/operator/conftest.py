"""A fake API server (kmock + tests/kmock_ext.py) that the operator tests run a real Kopf against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import CRD_FILE, NS

from kmock_ext import KopfReadyEmulator, register_crd


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": KopfReadyEmulator}


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The shared avatars volume, as the operator sees it."""
    path = tmp_path / "volume"
    (path / "avatars").mkdir(parents=True)
    return path


@pytest.fixture
def k8s(kmock: Any, tmp_path: Path, volume: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    kmock.resources.load_bundled()
    register_crd(kmock, yaml.safe_load(CRD_FILE.read_text()))
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {"token": "fake"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": NS}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    import kubernetes.config.kube_config

    # The client reads $KUBECONFIG once, at import time.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setenv("MUSETALK_OPERATOR_DATA_DIR", str(volume))
    monkeypatch.setenv("MUSETALK_OPERATOR_IMAGE", "musetalk-server:test")
    monkeypatch.setenv("MUSETALK_OPERATOR_POST_EVENTS", "false")
    return kmock


