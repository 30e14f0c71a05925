"""The Helm chart, rendered and linted by real Helm; every object checked against Kubernetes' schemas."""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest
from chart_helpers import (
    CAPABILITIES_1_20,
    CAPABILITIES_1_30,
    CHART,
    FULL,
    GPU_OFF,
    KUBE_VERSION,
    container,
    env_of,
    find,
    render,
    render_on,
)

VARIANTS = {"defaults": {}, "gpu-off": GPU_OFF, "everything-on": FULL}
NOT_BUILT_IN = {"ServiceMonitor"}  # a Prometheus Operator CRD: checked by hand below


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_helm_lint_is_clean(values: dict) -> None:
    report = helm.lint(str(CHART), values=values or None, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    # Severity 1 is INFO ("icon is recommended"); warnings (2) and errors (3) are not allowed.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_rendered_object_is_valid_kubernetes(values: dict) -> None:
    docs = render(values)
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["kind"] in NOT_BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}") from e
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount"} <= kinds
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}  # least privilege: nothing cluster-wide


def test_defaults_put_inference_on_gpus_with_probes_and_a_shared_volume() -> None:
    docs = render()
    server = find(docs, "Deployment", "musetalk-server")
    c = container(server)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"  # a string: 1.20's server-side apply wants one
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # The startup probe waits for the engine (ready), so its 5-minute window covers model loading
    # and an engine that never loads gets the pod restarted.
    assert c["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 300
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(c)
    assert env["MUSETALK_AVATAR_SOURCE"] == "kubernetes" and env["MUSETALK_RESULT_DIR"] == "/data"
    assert env["MUSETALK_PORT"] == "8000" and env["MUSETALK_HOST"] == "0.0.0.0"
    assert env["MUSETALK_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    pod = server["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "musetalk-avatars"
    pvc = find(docs, "PersistentVolumeClaim", "musetalk-avatars")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    operator = find(docs, "Deployment", "musetalk-operator")
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"]["type"] == "Recreate"
    assert container(operator)["command"] == ["musetalk-operator"]
    service = find(docs, "Service", "musetalk-server")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert not [d for d in docs if d["kind"] in ("Ingress", "ServiceMonitor", "Secret", "PodDisruptionBudget")]


def test_a_gpu_rollout_needs_no_spare_gpu_and_every_container_has_resources() -> None:
    docs = render()
    server = find(docs, "Deployment", "musetalk-server")
    assert server["spec"]["strategy"] == {"type": "RollingUpdate",
                                          "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    pod = server["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["weights"]  # models.download is on by default
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    pods += [d["spec"] for d in docs if d["kind"] == "Pod"]  # the `helm test` hook
    assert len(pods) == 3
    for spec in pods:
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            resources = c["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"], c["name"]
            quantities = [q for kind in resources.values() for q in kind.values()]
            assert all(isinstance(q, str) for q in quantities), (c["name"], resources)


def test_user_quantities_given_as_numbers_render_as_strings() -> None:
    docs = render({"server": {"resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"cpu": 4.5}}}})
    resources = container(find(docs, "Deployment", "musetalk-server"))["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "8Gi"},
                         "limits": {"cpu": "4.5", "memory": "16Gi", "nvidia.com/gpu": "1"}}


def test_the_optional_pdb_and_topology_spread_select_the_server_pods() -> None:
    values = {"server": {"podDisruptionBudget": {"enabled": True}, "topologySpread": {"enabled": True}}}
    for capabilities, api in ((CAPABILITIES_1_30, "policy/v1"), (CAPABILITIES_1_20, "policy/v1beta1")):
        docs = render_on(capabilities, values)
        pdb = find(docs, "PodDisruptionBudget")
        assert pdb["apiVersion"] == api and pdb["spec"]["maxUnavailable"] == 1
        server = find(docs, "Deployment", "musetalk-server")
        labels = server["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"] == labels
        [spread] = server["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"] == labels and spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_the_server_decides_cel_and_servicemonitor_by_default() -> None:
    def cel(docs: list[dict]) -> int:
        """How many CEL rule lists the CRD carries (the name's and the video source's)."""
        schema = find(docs, "CustomResourceDefinition", "avatars.musetalk.io")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return json.dumps(schema).count("x-kubernetes-validations")

    newer, older = render_on(CAPABILITIES_1_30), render_on(CAPABILITIES_1_20)
    assert cel(newer) == 2 and cel(older) == 0
    assert {d["metadata"]["name"] for d in newer if d["kind"] == "ServiceMonitor"} == {
        "musetalk-server", "musetalk-operator"}
    assert not [d for d in older if d["kind"] == "ServiceMonitor"]
    # Explicit values still win: false leaves CEL out on 1.30, true renders a ServiceMonitor anywhere.
    assert not cel(render_on(CAPABILITIES_1_30, {"crds": {"celValidation": False}}))
    assert [d for d in render_on(CAPABILITIES_1_20, {"metrics": {"serviceMonitor": {"enabled": True}}})
            if d["kind"] == "ServiceMonitor"]
    assert not [d for d in render_on(CAPABILITIES_1_30, {"metrics": {"serviceMonitor": {"enabled": False}}})
                if d["kind"] == "ServiceMonitor"]
    with pytest.raises(helm.HelmError, match="v1.20.2 has no CEL validation in CRDs"):
        render_on(CAPABILITIES_1_20, {"crds": {"celValidation": True}})


def test_rbac_grants_only_what_the_code_uses() -> None:
    docs = render()
    operator = find(docs, "Role", "musetalk-operator")["rules"]
    grants = {(g, r): set(rule["verbs"]) for rule in operator for g in rule["apiGroups"] for r in rule["resources"]}
    assert grants == {
        ("musetalk.io", "avatars"): {"get", "list", "watch", "patch"},
        ("musetalk.io", "avatars/status"): {"get", "patch"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "events"): {"create", "list"},  # list: a Job's FailedCreate (handlers.recheck_pending)
    }
    server = find(docs, "Role", "musetalk-server")["rules"]
    assert server == [{"apiGroups": ["musetalk.io"], "resources": ["avatars"],
                       "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                      {"apiGroups": ["musetalk.io"], "resources": ["renderjobs"],
                       "verbs": ["get", "list", "create", "patch", "delete"]}]
    binding = find(docs, "RoleBinding", "musetalk-operator")
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "musetalk-operator", "namespace": "lipsync"}


def test_gpu_off_requests_no_gpu_anywhere() -> None:
    docs = render(GPU_OFF)
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in json.dumps([c["resources"] for c in pod["containers"]])
        assert "nvidia.com/gpu" not in json.dumps(pod.get("tolerations", []))
    assert env_of(container(find(docs, "Deployment", "musetalk-operator")))["MUSETALK_OPERATOR_GPUS"] == "0"


def test_local_mode_needs_no_api_access() -> None:
    docs = render({"server": {"avatarSource": "local"}})
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "musetalk-server"]
    pod = find(docs, "Deployment", "musetalk-server")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_everything_on_adds_ingress_monitoring_secret_and_scheduling() -> None:
    docs = render(FULL)
    ingress = find(docs, "Ingress", "musetalk-server")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "lipsync.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "musetalk-server", "port": {"name": "http"}}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"musetalk-server", "musetalk-operator"}
    for name, port in (("musetalk-server", "http"), ("musetalk-operator", "metrics")):
        monitor = monitors[name]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"] == [{"port": port, "path": "/metrics", "interval": "15s"}]
        # The selector must pick exactly the Service that has that port.
        selected = [d for d in docs if d["kind"] == "Service"
                    and monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()]
        assert [p["name"] for s in selected for p in s["spec"]["ports"]] == [port]
    server = find(docs, "Deployment", "musetalk-server")
    c = container(server)
    assert env_of(c)["MUSETALK_API_KEY"] == {"secretKeyRef": {"name": "musetalk-api-key", "key": "api-key"}}
    assert find(docs, "Secret", "musetalk-api-key")["data"] == {"api-key": "czNjcmV0"}
    assert server["spec"]["replicas"] == 3
    pod = server["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["initContainers"][0]["command"] == ["musetalk-server", "weights", "download"]


@pytest.mark.parametrize("values, complaint", [
    ({"server": {"avatarSource": "cloud"}}, "avatarSource"),
    ({"settings": {"ENGINE": "lite"}}, "ENGINE"),
    ({"settings": {"MUSETALK_RESULT_DIR": "/elsewhere"}}, "MUSETALK_RESULT_DIR"),
    ({"persistence": {"accessModes": []}}, "accessModes"),
    ({"preprocess": {"backoffLimit": -1}}, "backoffLimit"),
    ({"replicas": 2}, "replicas"),
    ({"crds": {"celValidation": "yes"}}, "celValidation"),
    ({"server": {"rollingUpdate": {"maxSurge": -1, "maxUnavailable": 1}}}, "maxSurge"),
    ({"server": {"topologySpread": {"whenUnsatisfiable": "Sometimes"}}}, "whenUnsatisfiable"),
])
def test_values_schema_rejects_mistakes(values: dict, complaint: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError, match=complaint):
        chart.validate_schema(values)


def test_client_side_install_works_offline() -> None:
    with helm.Config(namespace="lipsync", storage_driver="memory") as cfg:
        release = cfg.install(str(CHART), "musetalk", FULL, dry_run="client")
    assert "kind: Deployment" in release["manifest"]


@pytest.mark.parametrize("grace, pre_stop", [(20, 5), (60, 0)])
def test_the_pod_outlives_the_drain(grace: int, pre_stop: int) -> None:
    # SIGTERM comes after preStop; the server then drains for MUSETALK_SHUTDOWN_GRACE_S and exits.
    docs = render({"server": {"shutdownGraceSeconds": grace, "preStopSeconds": pre_stop}})
    server = find(docs, "Deployment", "musetalk-server")
    pod, c = server["spec"]["template"]["spec"], container(server)
    assert env_of(c)["MUSETALK_SHUTDOWN_GRACE_S"] == str(grace)
    if pre_stop:
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pre_stop)]
    else:
        assert "lifecycle" not in c
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
