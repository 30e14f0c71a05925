"""The few API calls the handlers make, through the official client (Kopf has no object API).

Reads come back as plain dicts (`_preload_content=False`), the same shape Kopf hands the
handlers, so the pure functions in jobs.py and status.py never see client model classes.
"""

from __future__ import annotations

import datetime
import json
import socket
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .config import GROUP, KIND, PLURAL, VERSION

__all__ = [
    "ApiException",
    "JobRefused",
    "create_job",
    "delete_job",
    "get_avatar",
    "get_job",
    "job_events",
    "list_jobs",
    "list_pods",
    "patch_avatar_message",
    "patch_avatar_status",
    "post_event",
    "server_version",
]

EVENT_COMPONENT = "musetalk-operator"
MAX_EVENT_MESSAGE = 1024  # what `kubectl describe` shows in full; the API allows more


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


def get_avatar(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def patch_avatar_status(namespace: str, name: str, status: dict[str, Any], resource_version: str) -> None:
    """Merge-patch the status subresource, guarded by resourceVersion (409 if it moved)."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": status}
    client.CustomObjectsApi().patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body, _preload_content=False)


def patch_avatar_message(namespace: str, name: str, message: str) -> None:
    """Set status.message alone (deletion's last word; the phase stays as it was)."""
    try:
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": {"message": message}}, _preload_content=False)
    except ApiException as e:
        if e.status != 404:
            raise


def list_jobs(namespace: str, label: str, value: str) -> list[dict[str, Any]]:
    items = _json(client.BatchV1Api().list_namespaced_job(
        namespace, label_selector=f"{label}={value}", _preload_content=False))["items"]
    # Filter again: the selector is the server's job, but a stale cache must not widen it.
    return [j for j in items if (j.get("metadata", {}).get("labels") or {}).get(label) == value]


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(client.BatchV1Api().read_namespaced_job(name, namespace, _preload_content=False))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


class JobRefused(Exception):
    """The API server will not take the Job as specified (422): its own validation's message."""


def create_job(namespace: str, job: dict[str, Any]) -> bool:
    """Create the Job; False if it already exists (a re-run handler, or a restart); JobRefused if
    the API server's validation refuses it (e.g. resources whose request exceeds their limit)."""
    try:
        client.BatchV1Api().create_namespaced_job(namespace, job, _preload_content=False)  # type: ignore[arg-type]
        return True
    except ApiException as e:
        if e.status == 409:
            return False
        if e.status == 422:
            raise JobRefused(_status_message(e)) from e
        raise


def _status_message(e: ApiException) -> str:
    """The message of the Status an error answer carries, else the HTTP reason."""
    try:
        return str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def delete_job(namespace: str, name: str) -> None:
    try:
        # Background: the Job goes now and its pods follow, so a spec change is not held up.
        client.BatchV1Api().delete_namespaced_job(
            name, namespace, propagation_policy="Background", _preload_content=False)
    except ApiException as e:
        if e.status != 404:
            raise


def list_pods(namespace: str, label: str, value: str) -> list[dict[str, Any]]:
    items = _json(client.CoreV1Api().list_namespaced_pod(
        namespace, label_selector=f"{label}={value}", _preload_content=False))["items"]
    return [p for p in items if (p.get("metadata", {}).get("labels") or {}).get(label) == value]


def job_events(namespace: str, job_name: str) -> list[dict[str, Any]]:
    """The Events about one Job (the Job controller's `FailedCreate`, for one)."""
    return _json(client.CoreV1Api().list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={job_name}",
        _preload_content=False))["items"]


def post_event(avatar: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    """Record a core/v1 Event on the Avatar, where `kubectl describe avatar` shows it."""
    meta = avatar["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": event_type, "reason": reason, "message": message[:MAX_EVENT_MESSAGE],
        "source": {"component": EVENT_COMPONENT}, "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": socket.gethostname(), "count": 1, "firstTimestamp": now, "lastTimestamp": now,
    }
    # The client takes plain dicts as bodies; its stubs name only its model classes.
    client.CoreV1Api().create_namespaced_event(meta["namespace"], body, _preload_content=False)  # type: ignore[arg-type]


def server_version(timeout_s: float) -> str:
    """The API server's version; raises (ApiException, urllib3 errors) when it cannot be reached."""
    # The generated VersionApi asks for /version/ (a trailing slash), which not every server serves.
    api = client.ApiClient()
    request = api.param_serialize("GET", "/version", header_params={"Accept": "application/json"},
                                  auth_settings=["BearerToken"])
    response = api.call_api(*request, _request_timeout=timeout_s)
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return str(_json(response)["gitVersion"])
