"""A real kube-apiserver, etcd and kube-controller-manager (scripts/k8s_control_plane.py) for the
tests in this folder, with the chart installed for real by Helm (helm-python-sdk).

`make test` builds the binaries before pytest starts (7 minutes once, then cached). If they are
missing here, every test in this folder fails and says how to build them; set
MUSETALK_SKIP_K8S_REAL=1 to skip them instead (a developer's explicit opt-out, never CI's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_real_helpers import (
    ROOT,
    SHARED_RELEASE_NS,
    Cluster,
    Operator,
    chart_release,
    new_namespace,
    operator_env,
    service_account_kubeconfig,
)

sys.path.insert(0, str(ROOT / "scripts"))
import k8s_control_plane

OPT_OUT = "MUSETALK_SKIP_K8S_REAL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(OPT_OUT) == "1":
        skip = pytest.mark.skip(reason=f"{OPT_OUT}=1: real control-plane tests opted out")
        for item in items:
            if "k8s_real" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = k8s_control_plane.bin_dir()
    if not all((binaries / name).exists() for name in k8s_control_plane.BINARIES):
        pytest.fail(f"no control-plane binaries in {binaries}: run `python scripts/k8s_control_plane.py build` "
                    f"(about 7 minutes once; `make test` does it) or set {OPT_OUT}=1", pytrace=False)
    state = tmp_path_factory.mktemp("control-plane")
    plane = k8s_control_plane.start(state, tied=True)
    try:
        yield Cluster(plane)
    finally:
        k8s_control_plane.stop(state)


@pytest.fixture(scope="session")
def shared_release(cluster: Cluster) -> dict[str, Any]:
    """The chart installed once for real with its default values (GPU on, CRD included; the chart
    leaves the CEL rule out by itself, this being 1.20): `helm install` as the docs say."""
    cluster.create_namespace(SHARED_RELEASE_NS)
    release = chart_release(cluster, SHARED_RELEASE_NS, {})
    cluster.wait_crd_established("avatars.musetalk.io")
    return release


@pytest.fixture
def namespace(cluster: Cluster, shared_release: dict[str, Any], request: pytest.FixtureRequest) -> str:
    """A fresh namespace with its own release of the chart (its ServiceAccounts and Roles).

    A test module may set CHART_VALUES to change the release's values (one level deep).
    """
    ns = new_namespace(cluster, request.node.name)
    values = {"crds": {"install": False}, "preprocess": {"backoffLimit": 1},
              "settings": {"MUSETALK_MAX_VIDEO_SIDE": "256"}}  # small, fast Job work
    for key, value in getattr(request.module, "CHART_VALUES", {}).items():
        values[key] = {**values.get(key, {}), **value}
    chart_release(cluster, ns, values)
    return ns


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The shared avatars volume: the operator, the "Job pods" and the service all use this folder."""
    path = tmp_path / "volume"
    (path / "avatars").mkdir(parents=True)
    return path


@pytest.fixture
def operator(cluster: Cluster, namespace: str, volume: Path, tmp_path: Path) -> Iterator[Operator]:
    """`musetalk-operator` as a process, with the chart's environment and its ServiceAccount's token."""
    kubeconfig = service_account_kubeconfig(cluster, namespace, "musetalk-operator", tmp_path / "operator.kubeconfig")
    env = operator_env(cluster, namespace, volume, kubeconfig)
    with Operator(env, tmp_path / "operator.log") as running:
        yield running
    print(running.log()[-6000:])  # pytest shows it when the test failed
