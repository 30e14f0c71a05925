"""The chart's autoscaling (values: autoscaling), in both modes, rendered by real Helm and checked
against the schemas: Kubernetes' for the HPA (autoscaling/v2, or v2beta2 for 1.20-1.22) and the
adapter rules' ConfigMap, KEDA's for the ScaledObject (cloudcoil's models, generated from KEDA
2.16's CRD: no CRD of KEDA's is vendored here)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart_helpers import CAPABILITIES_1_20, CAPABILITIES_1_30, CHART, find, render, render_on
from cloudcoil.models.keda.v1alpha1 import ScaledObject

HPA_ON = {"autoscaling": {"enabled": True, "mode": "hpa"}}
KEDA_ON = {"autoscaling": {"enabled": True, "mode": "keda"}}
BOTH_METRICS = {"targetLoad": 0.5, "targetQueueDepth": 3}
# The oldest schemas kubernetes-validate has; 1.25 still serves autoscaling/v2beta2.
SCHEMA_VERSION = {"autoscaling/v2": "1.30", "autoscaling/v2beta2": "1.25"}


def validate_kubernetes(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}") from e


def validate_scaled_object(doc: dict[str, Any]) -> None:
    """KEDA's schema: the models reject wrong types and missing fields, and drop unknown ones, so
    the round trip must give the document back unchanged."""
    parsed = ScaledObject.model_validate(doc)
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


def adapter_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return yaml.safe_load(find(docs, "ConfigMap", "musetalk-prometheus-adapter-rules")["data"]["rules.yaml"])["rules"]


@pytest.mark.parametrize("capabilities, api", [(CAPABILITIES_1_30, "autoscaling/v2"),
                                               (CAPABILITIES_1_20, "autoscaling/v2beta2")], ids=["1.30", "1.20"])
def test_hpa_mode_renders_a_valid_hpa_on_the_load_per_pod(capabilities: tuple, api: str) -> None:
    docs = render_on(capabilities, HPA_ON)
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == api
    validate_kubernetes(hpa, SCHEMA_VERSION[api])
    validate_kubernetes(find(docs, "ConfigMap", "musetalk-prometheus-adapter-rules"), "1.30")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "musetalk-server"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "musetalk_scheduler_load"}, "target": {"type": "AverageValue", "averageValue": "0.6"}}}]
    # The autoscaler owns the replica count: an upgrade must not reset it to replicaCount.
    assert "replicas" not in find(docs, "Deployment", "musetalk-server")["spec"]
    assert not [d for d in docs if d["kind"] == "ScaledObject"]


def test_the_adapter_serves_exactly_the_metrics_the_hpa_asks_for() -> None:
    docs = render({"autoscaling": HPA_ON["autoscaling"] | BOTH_METRICS})
    asked = [m["pods"]["metric"]["name"] for m in find(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]]
    assert asked == ["musetalk_scheduler_load", "musetalk_scheduler_queue_depth"]
    rules = adapter_rules(docs)
    assert [r["name"]["as"] for r in rules] == asked
    for rule in rules:
        # Per pod, through the labels the ServiceMonitor's scrape adds.
        assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"},
                                                   "pod": {"resource": "pod"}}}
        assert rule["seriesQuery"] == f'{rule["name"]["as"]}{{namespace!="",pod!=""}}'
    # A pod's queue is its priorities' sum; its load is one series.
    assert [r["metricsQuery"] for r in rules] == ["max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
                                                  "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"]
    assert not [d for d in render({"autoscaling": HPA_ON["autoscaling"] | {"adapter": {"rulesConfigMap": False}}})
                if d["kind"] == "ConfigMap" and "adapter" in d["metadata"]["name"]]


@pytest.mark.parametrize("capabilities", [CAPABILITIES_1_30, CAPABILITIES_1_20], ids=["1.30", "1.20"])
def test_keda_mode_renders_a_valid_scaled_object_with_a_prometheus_trigger_per_metric(capabilities: tuple) -> None:
    docs = render_on(capabilities, {"autoscaling": KEDA_ON["autoscaling"] | BOTH_METRICS})
    scaled = find(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    validate_scaled_object(scaled)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "musetalk-server"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    matchers = 'namespace="lipsync",service="musetalk-server"'
    assert [(t["type"], t["metricType"], t["metadata"]["query"], t["metadata"]["threshold"]) for t in spec["triggers"]] == [
        ("prometheus", "AverageValue", f"sum(musetalk_scheduler_load{{{matchers}}})", "0.5"),
        ("prometheus", "AverageValue", f"sum(musetalk_scheduler_queue_depth{{{matchers}}})", "3")]
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" or "adapter" in d["metadata"]["name"]]
    assert "replicas" not in find(docs, "Deployment", "musetalk-server")["spec"]
    own = render({"autoscaling": KEDA_ON["autoscaling"] | {"keda": {"labelMatchers": 'job="lipsync"'}}})
    assert find(own, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"] == 'sum(musetalk_scheduler_load{job="lipsync"})'


@pytest.mark.parametrize("values", [HPA_ON, KEDA_ON], ids=["hpa", "keda"])
def test_scale_down_lets_each_pod_drain_before_the_next_goes(values: dict) -> None:
    def behavior(extra: dict) -> dict:
        docs = render({"autoscaling": values["autoscaling"] | extra.get("autoscaling", {}),
                       "server": extra.get("server", {})})
        doc = next(d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"))
        spec = doc["spec"]
        grace = find(docs, "Deployment", "musetalk-server")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        return (spec["behavior"] if doc["kind"] == "HorizontalPodAutoscaler"
                else spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]), grace

    down, grace = behavior({})
    # One pod per period of the pod's whole termination (preStop 5 + drain 20 + 10 s to exit).
    assert grace == 35
    assert down == {"scaleDown": {"stabilizationWindowSeconds": 300,
                                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 35}]}}
    down, grace = behavior({"server": {"shutdownGraceSeconds": 120, "preStopSeconds": 10}})
    assert down["scaleDown"]["policies"][0]["periodSeconds"] == grace == 140
    down, _ = behavior({"autoscaling": {"scaleDown": {"periodSeconds": 600, "pods": 2,
                                                      "stabilizationWindowSeconds": 60}}})
    assert down["scaleDown"] == {"stabilizationWindowSeconds": 60,
                                 "policies": [{"type": "Pods", "value": 2, "periodSeconds": 600}]}


@pytest.mark.parametrize("values", [HPA_ON, KEDA_ON], ids=["hpa", "keda"])
def test_helm_lint_is_clean_with_autoscaling_on(values: dict) -> None:
    report = helm.lint(str(CHART), values=values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_autoscaling_is_off_by_default() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    assert find(docs, "Deployment", "musetalk-server")["spec"]["replicas"] == 1


@pytest.mark.parametrize("values, complaint", [
    ({"autoscaling": {"mode": "vpa"}}, "mode"),
    ({"autoscaling": {"targetLoad": 0}}, "targetLoad"),
    ({"autoscaling": {"minReplicas": 0}}, "minReplicas"),
    ({"autoscaling": {"scaleDown": {"periodSeconds": 3600}}}, "periodSeconds"),
    ({"autoscaling": {"keda": {"serverAddress": "prometheus:9090"}}}, "serverAddress"),
    ({"autoscaling": {"replicas": 3}}, "replicas"),
])
def test_the_schema_rejects_autoscaling_mistakes(values: dict, complaint: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError, match=complaint):
        chart.validate_schema(values)


def test_fewer_max_than_min_replicas_fails_by_name() -> None:
    with pytest.raises(helm.HelmError, match=r"autoscaling.maxReplicas \(2\) is below autoscaling.minReplicas \(3\)"):
        render({"autoscaling": HPA_ON["autoscaling"] | {"minReplicas": 3, "maxReplicas": 2}})
