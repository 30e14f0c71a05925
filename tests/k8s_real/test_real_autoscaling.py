"""The chart with autoscaling on, installed for real by Helm on kube-apiserver 1.20: the HPA is
accepted (autoscaling/v2beta2, the newest 1.20 serves) and the real HPA controller takes it up. No
metrics adapter runs here, so the controller can only report that it asked for the metric."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest
from k8s_real_helpers import Cluster, chart_release, eventually, new_namespace

HPA_VALUES = {"crds": {"install": False},
              "autoscaling": {"enabled": True, "mode": "hpa", "maxReplicas": 3, "targetQueueDepth": 2}}
HPA_SYNC_TIMEOUT_S = 40.0  # the controller-manager's HPA loop runs every 15 s


def test_the_hpa_installs_on_1_20_and_the_hpa_controller_asks_for_the_load(
        cluster: Cluster, shared_release: dict[str, Any]) -> None:
    ns = new_namespace(cluster, "hpa")
    release = chart_release(cluster, ns, HPA_VALUES)
    assert release["status"] == "deployed"
    code, body = cluster.plane.get(f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers")
    assert code == 200, body
    [hpa] = json.loads(body)["items"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "musetalk-server"
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [
        "musetalk_scheduler_load", "musetalk_scheduler_queue_depth"]
    # The server kept the scale-down policy as rendered (v2beta2 has `behavior` since 1.18).
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 35}]
    deployment = cluster.apps.read_namespaced_deployment("musetalk-server", ns)
    assert deployment.spec.replicas == 1  # the server's default: the chart left the count to the HPA
    rules = cluster.core.read_namespaced_config_map("musetalk-prometheus-adapter-rules", ns).data["rules.yaml"]
    assert "musetalk_scheduler_load" in rules

    def controller_verdict() -> dict[str, Any] | None:
        _, body = cluster.plane.get(f"/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers/"
                                    "musetalk-server")
        conditions = {c["type"]: c for c in json.loads(body).get("status", {}).get("conditions", [])}
        return conditions.get("ScalingActive")

    # The real controller read the HPA and went to the custom metrics API for the pods' load; with
    # no adapter registered (and no pod running: no kubelet) it cannot get it, and says which metric.
    active = eventually(controller_verdict, timeout=HPA_SYNC_TIMEOUT_S, what="the HPA controller's ScalingActive")
    assert active["status"] == "False"
    assert active["reason"] == "FailedGetPodsMetric" and "musetalk_scheduler_load" in active["message"], active


def test_keda_mode_without_keda_fails_naming_the_scaled_object(cluster: Cluster,
                                                                shared_release: dict[str, Any]) -> None:
    # KEDA's CRD is not installed here (nor vendored): the install says what is missing.
    ns = new_namespace(cluster, "keda")
    with pytest.raises(helm.HelmError, match=r'kind "ScaledObject" in version "keda.sh/v1alpha1"'):
        chart_release(cluster, ns, {"crds": {"install": False}, "autoscaling": {"enabled": True, "mode": "keda"}})
