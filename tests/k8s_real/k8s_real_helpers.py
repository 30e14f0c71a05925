"""Helpers for the real control-plane tests: admin API access, Helm installs, ServiceAccount
kubeconfigs, the operator as a process, and the kubelet's part played by patching Pod status."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "musetalk"
RELEASE = "musetalk"
SHARED_RELEASE_NS = "musetalk-helm"  # manifests/ (kubectl apply -k) installs into `musetalk`
GROUP, VERSION, PLURAL = "musetalk.io", "v1", "avatars"
CONTAINER = "preprocess"
READY_TIMEOUT_S = 30.0
POLL_S = 0.1


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `check` returns something truthy; its last error is in the failure message."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (KeyError, IndexError, TypeError, ApiException) as e:
            last = e
        time.sleep(POLL_S)
    raise AssertionError(f"{what} not met within {timeout}s (last error: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


class Cluster:
    """The started control plane, seen with the admin token (system:masters)."""

    def __init__(self, plane: Any) -> None:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # loopback, self-signed
        self.plane = plane
        self.url = plane.url
        self.kubeconfig = plane.kubeconfig
        self.api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.extensions = client.ApiextensionsV1Api(self.api)

    # -- plain reads and writes, as dicts ----------------------------------------------------
    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}}, _preload_content=False)
        # Pods are admitted only once the namespace's `default` ServiceAccount exists.
        eventually(lambda: self.core.read_namespaced_service_account("default", name), what=f"{name}/default SA")

    def wait_crd_established(self, name: str) -> dict[str, Any]:
        def established() -> dict[str, Any] | None:
            crd = _json(self.extensions.read_custom_resource_definition(name, _preload_content=False))
            conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
            return crd if conditions.get("Established") == "True" else None
        return eventually(established, what=f"CRD {name} established")

    def avatar(self, ns: str, name: str) -> dict[str, Any]:
        return _json(self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False))

    def create_avatar(self, ns: str, name: str, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Avatar", "metadata": {"name": name}, "spec": spec}
        return _json(self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body,
                                                                 _preload_content=False))

    def patch_avatar_spec(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec},
                                                   _preload_content=False)

    def delete_avatar(self, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)

    def avatar_gone(self, ns: str, name: str) -> bool:
        try:
            self.avatar(ns, name)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    def phase(self, ns: str, name: str) -> str | None:
        return (self.avatar(ns, name).get("status") or {}).get("phase")

    def job(self, ns: str, name: str) -> dict[str, Any]:
        return _json(self.batch.read_namespaced_job(name, ns, _preload_content=False))

    def job_names(self, ns: str) -> list[str]:
        """Jobs that exist and are not being deleted."""
        items = _json(self.batch.list_namespaced_job(ns, _preload_content=False))["items"]
        return sorted(j["metadata"]["name"] for j in items if not j["metadata"].get("deletionTimestamp"))

    def pods_of(self, ns: str, job: str) -> list[dict[str, Any]]:
        return _json(self.core.list_namespaced_pod(ns, label_selector=f"job-name={job}",
                                                   _preload_content=False))["items"]

    def one_pod(self, ns: str, job: str, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The Job's one live pod (the real Job controller made it), if it exists yet."""
        pods = [p for p in self.pods_of(ns, job) if p["metadata"]["name"] not in exclude
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        return pods[0] if len(pods) == 1 else None

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        """The Events recorded on Avatar `name`, oldest first."""
        items = _json(self.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.kind=Avatar,involvedObject.name={name}", _preload_content=False))["items"]
        return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["creationTimestamp"],
                                            int(e["metadata"]["resourceVersion"])))

    def event_reasons(self, ns: str, name: str) -> list[str]:
        return [e["reason"] for e in self.events(ns, name)]

    # -- the kubelet's part ---------------------------------------------------------------------
    def set_pod_running(self, ns: str, pod: str) -> None:
        state = {"running": {"startedAt": now()}}
        self._pod_status(ns, pod, "Running", state, ready=True)

    def finish_pod(self, ns: str, pod: str, *, exit_code: int, message: str, reason: str | None = None) -> None:
        """The container ended: phase and terminated state, with its termination message."""
        state = {"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                                "message": message, "startedAt": now(), "finishedAt": now()}}
        self._pod_status(ns, pod, "Succeeded" if exit_code == 0 else "Failed", state, ready=False)

    def set_pod_unschedulable(self, ns: str, pod: str, message: str) -> None:
        """What the scheduler writes when no node fits."""
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastTransitionTime": now(), "lastProbeTime": None}
        self.core.patch_namespaced_pod_status(pod, ns, {"status": {"phase": "Pending", "conditions": [condition]}},
                                              _preload_content=False)

    def set_container_waiting(self, ns: str, pod: str, reason: str, message: str) -> None:
        """What the kubelet writes while a container cannot start (an image pull, a config error)."""
        condition = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now(), "lastProbeTime": None}
        self.core.patch_namespaced_pod_status(pod, ns, {"status": {"conditions": [condition]}}, _preload_content=False)
        self._pod_status(ns, pod, "Pending", {"waiting": {"reason": reason, "message": message}}, ready=False)

    def table(self, ns: str, plural: str = PLURAL) -> dict[str, dict[str, Any]]:
        """`kubectl get avatars` (or another `plural`), as the server prints it (its Table):
        name -> column -> cell."""
        request = urllib.request.Request(
            f"{self.url}/apis/{GROUP}/{VERSION}/namespaces/{ns}/{plural}",
            headers={"Authorization": f"Bearer {self.plane.token}",
                     "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=5) as response:
            table = json.loads(response.read())
        names = [c["name"] for c in table["columnDefinitions"]]
        return {row["cells"][0]: dict(zip(names, row["cells"], strict=True)) for row in table["rows"]}

    def annotate_avatar(self, ns: str, name: str, annotations: dict[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                   {"metadata": {"annotations": annotations}}, _preload_content=False)

    def patch_job(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job(name, ns, {"spec": spec}, _preload_content=False)

    def _pod_status(self, ns: str, pod: str, phase: str, state: dict[str, Any], *, ready: bool) -> None:
        image = _json(self.core.read_namespaced_pod(pod, ns, _preload_content=False))["spec"]["containers"][0]["image"]
        status = {"phase": phase, "containerStatuses": [{
            "name": CONTAINER, "image": image, "imageID": "", "ready": ready, "restartCount": 0, "state": state}]}
        self.core.patch_namespaced_pod_status(pod, ns, {"status": status}, _preload_content=False)

    def bind_to_lost_node(self, ns: str, pod: str, node: str = "lost-node") -> None:
        """Schedule the pod onto a Node no kubelet answers for: deleting it then never finishes."""
        try:
            self.core.create_node({"metadata": {"name": node}}, _preload_content=False)
        except ApiException as e:
            if e.status != 409:
                raise
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self.core.create_namespaced_pod_binding(pod, ns, binding, _preload_content=False)


def new_namespace(cluster: Cluster, test_name: str) -> str:
    """A DNS-label namespace named after the test, unique within the session."""
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_"))[:40].strip("-")
    name = f"t-{base}-{os.urandom(2).hex()}"
    cluster.create_namespace(name)
    return name


def chart_release(cluster: Cluster, ns: str, values: dict[str, Any]) -> dict[str, Any]:
    """`helm install musetalk charts/musetalk -n ns` through the Helm SDK (helm-python-sdk), on the
    chart's defaults (GPU on) plus `values`."""
    with helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=ns) as cfg:
        return cfg.install(str(CHART), RELEASE, values, namespace=ns, timeout=60)


def service_account_kubeconfig(cluster: Cluster, ns: str, account: str, path: Path) -> Path:
    """A kubeconfig holding the ServiceAccount's own token (from the Secret 1.20's token controller makes)."""
    def token() -> str | None:
        sa = _json(cluster.core.read_namespaced_service_account(account, ns, _preload_content=False))
        for ref in sa.get("secrets") or []:
            secret = _json(cluster.core.read_namespaced_secret(ref["name"], ns, _preload_content=False))
            if secret.get("type") == "kubernetes.io/service-account-token" and "token" in (secret.get("data") or {}):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None
    value = eventually(token, what=f"a token for {ns}/{account}")
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": account,
        "clusters": [{"name": "real", "cluster": {"server": cluster.url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": account, "user": {"token": value}}],
        "contexts": [{"name": account, "context": {"cluster": "real", "user": account, "namespace": ns}}],
    }))
    return path


def operator_env(cluster: Cluster, ns: str, volume: Path, kubeconfig: Path,
                 cleanup_wait_s: int = 3) -> dict[str, str]:
    """The environment the chart gives the operator's container, with the volume and ports local."""
    deployment = _json(cluster.apps.read_namespaced_deployment("musetalk-operator", ns, _preload_content=False))
    env: dict[str, str] = {}
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = ns
        else:
            raise AssertionError(f"the test cannot resolve {item}")
    env |= {
        "MUSETALK_OPERATOR_DATA_DIR": str(volume),
        "MUSETALK_OPERATOR_JOB_DATA_DIR": str(volume),
        "MUSETALK_OPERATOR_METRICS_PORT": str(free_port()),
        "MUSETALK_OPERATOR_CLEANUP_WAIT_S": str(cleanup_wait_s),
    }
    return env | {
        "KUBECONFIG": str(kubeconfig),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}",
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONWARNINGS": "ignore:Unverified HTTPS request",  # the loopback apiserver is self-signed
    }


class Operator:
    """`python -m musetalk_operator` (the image's `musetalk-operator`), stopped by its PID."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log_path, self.health_port = env, log, free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Operator:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "musetalk_operator", "--health-port", str(self.health_port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        eventually(self._healthy, timeout=READY_TIMEOUT_S, what="the operator's /healthz")
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with rc {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
