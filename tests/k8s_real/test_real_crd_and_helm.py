"""The chart installed for real by Helm on kube-apiserver 1.20 with its default values, the plain
manifests applied by kubectl with no flags, and the CRD's server-side validation."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import helm_python as helm
import pytest
from k8s_real_helpers import ROOT, SHARED_RELEASE_NS, Cluster, _json, chart_release, eventually, new_namespace
from kubernetes.client.exceptions import ApiException

NS = SHARED_RELEASE_NS
MANIFESTS_NS = "musetalk"  # where manifests/ installs


def test_the_chart_installs_for_real_with_its_default_values(cluster: Cluster, shared_release: dict[str, Any]) -> None:
    version = json.loads(cluster.plane.get("/version")[1])
    assert version["gitVersion"] == "v1.20.2"  # the server the chart's kubeVersion must admit
    assert shared_release["status"] == "deployed"
    deployments = {d["metadata"]["name"]: d for d in _json(cluster.apps.list_namespaced_deployment(
        NS, _preload_content=False))["items"]}
    assert set(deployments) == {"musetalk-server", "musetalk-operator"}
    server = deployments["musetalk-server"]
    # GPU on (a quantity as a string: 1.20's server-side apply refused a bare 1) and a rollout that
    # needs no spare GPU.
    assert server["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # No Prometheus Operator here, so no ServiceMonitor (the chart asked the server).
    assert "kind: Deployment" in shared_release["manifest"] and "ServiceMonitor" not in shared_release["manifest"]
    roles = {r.metadata.name for r in cluster.rbac.list_namespaced_role(NS).items}
    assert roles == {"musetalk-server", "musetalk-operator"}
    accounts = {s.metadata.name for s in cluster.core.list_namespaced_service_account(NS).items}
    assert {"musetalk-server", "musetalk-operator"} <= accounts
    assert cluster.core.read_namespaced_persistent_volume_claim("musetalk-avatars", NS).status.phase == "Pending"

    crd = cluster.wait_crd_established("avatars.musetalk.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "x-kubernetes-validations" not in json.dumps(crd["spec"]["versions"][0]["schema"])
    jobs_crd = cluster.wait_crd_established("renderjobs.musetalk.io")  # async jobs in cluster mode
    assert jobs_crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # The real ReplicaSet controller made the operator's pod; no scheduler, so it never leaves Pending.
    def operator_pod() -> dict[str, Any] | None:
        pods = _json(cluster.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=operator",
                                                      _preload_content=False))["items"]
        return pods[0] if pods else None
    pod = eventually(operator_pod, what="the operator Deployment's pod")
    assert pod["spec"]["serviceAccountName"] == "musetalk-operator" and "nodeName" not in pod["spec"]


def test_the_cel_rule_on_a_server_without_cel_is_refused_by_name(cluster: Cluster,
                                                                  shared_release: dict[str, Any]) -> None:
    ns = new_namespace(cluster, "cel")
    with pytest.raises(helm.HelmError, match="no CEL validation in CRDs: install with crds.celValidation=auto"):
        chart_release(cluster, ns, {"crds": {"install": True, "celValidation": True}})


def test_the_optional_gpu_safety_objects_install_on_1_20(cluster: Cluster, shared_release: dict[str, Any]) -> None:
    ns = new_namespace(cluster, "pdb")
    release = chart_release(cluster, ns, {"crds": {"install": False}, "server": {
        "podDisruptionBudget": {"enabled": True}, "topologySpread": {"enabled": True}}})
    assert release["status"] == "deployed"
    code, body = cluster.plane.get(f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets")
    assert code == 200, body
    pdbs = json.loads(body)["items"]
    assert [p["spec"]["maxUnavailable"] for p in pdbs] == [1]  # policy/v1beta1: 1.20 has no policy/v1
    server = _json(cluster.apps.read_namespaced_deployment("musetalk-server", ns, _preload_content=False))
    spread = server["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_apply_k_manifests_works_with_no_flags(cluster: Cluster, shared_release: dict[str, Any]) -> None:
    done = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "-k", str(ROOT / "manifests")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/musetalk-server created" in done.stdout
    deployments = {d.metadata.name for d in cluster.apps.list_namespaced_deployment(MANIFESTS_NS).items}
    assert deployments == {"musetalk-server", "musetalk-operator"}
    cluster.wait_crd_established("avatars.musetalk.io")
    cluster.wait_crd_established("renderjobs.musetalk.io")


@pytest.mark.parametrize(("spec", "says"), [
    ({"videoPath": "uploads/a.mp4", "bboxShift": 500}, "spec.bboxShift: Invalid value: 500"),
    ({"videoPath": "../etc/passwd"}, "spec.videoPath: Invalid value"),
    ({"videoPath": "uploads/a.mp4", "videoUrl": "https://example.com/a.mp4"}, "Found 2 valid alternatives"),
    ({"videoPath": "uploads/a.mp4", "engine": "turbo"}, "spec.engine: Unsupported value: \"turbo\""),
    ({"bboxShift": 1}, "Found none valid"),
])
def test_the_server_rejects_an_invalid_avatar(cluster: Cluster, shared_release: dict[str, Any],
                                              spec: dict[str, Any], says: str) -> None:
    with pytest.raises(ApiException) as caught:
        cluster.create_avatar(NS, "bad", **spec)
    assert caught.value.status == 422
    body = json.loads(caught.value.body)
    assert body["reason"] == "Invalid" and says in body["message"], body["message"]


def test_the_server_admits_and_defaults_a_valid_avatar(cluster: Cluster, shared_release: dict[str, Any]) -> None:
    created = cluster.create_avatar(NS, "fine", videoPath="uploads/a.mp4")
    assert created["spec"] == {"videoPath": "uploads/a.mp4", "bboxShift": 0, "engine": "auto"}  # CRD defaults
    cluster.delete_avatar(NS, "fine")  # no operator in this namespace: no finalizer holds it
    eventually(lambda: cluster.avatar_gone(NS, "fine"))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_refuses_a_misspelt_field_and_explains_the_real_ones(cluster: Cluster,
                                                                      shared_release: dict[str, Any]) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(cluster.kubeconfig)]
    typo = "apiVersion: musetalk.io/v1\nkind: Avatar\nmetadata: {name: typo}\nspec: {videoPath: a.mp4, bboxshift: 3}\n"
    # The API server publishes a new CRD's schema a moment after creating it (about a second on
    # 1.20); until then kubectl has nothing to validate against and lets the typo through.
    eventually(lambda: subprocess.run([*kubectl, "explain", "avatar.spec.bboxShift"], capture_output=True,
                                      timeout=60).returncode == 0, what="the Avatar schema published")
    done = subprocess.run([*kubectl, "-n", NS, "apply", "-f", "-"], input=typo, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and 'unknown field "bboxshift"' in done.stderr  # not pruned in silence
    explained = subprocess.run([*kubectl, "explain", "avatar.spec.bboxShift"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "An integer from -200 to 200; default 0." in explained
    status = subprocess.run([*kubectl, "explain", "avatar.status.reason"], capture_output=True, text=True,
                            timeout=60).stdout
    assert "Unschedulable" in status and "ImagePullBackOff" in status
