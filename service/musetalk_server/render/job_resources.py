"""RenderJob resources: async jobs as the cluster records them (crds/renderjobs.musetalk.io.yaml).

A thin client: reads, and writes that only land on the version they were decided on. Every
status write carries the resourceVersion it read, so when two replicas decide on the same job
at once (both claim it, or one renews while another cancels), the API server takes the first
and answers the second 409: `update` returns None and the loser reads again. That is the
whole of the locking; nothing is locked on the volume.

All calls are blocking (the official client); callers run them on worker threads.
"""

from __future__ import annotations

from typing import Any

from ..avatars.kube import CustomResources, raw_json

__all__ = ["JobResources", "PLURAL", "KIND"]

PLURAL, KIND = "renderjobs", "RenderJob"
_MERGE_PATCH = "application/merge-patch+json"


class JobResources(CustomResources):
    """RenderJob resources in one namespace, through the Kubernetes API."""

    plural = PLURAL

    def create(self, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{self.group}/{self.version}", "kind": KIND,
                "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "musetalk"}},
                "spec": spec, "status": status}
        return raw_json(self.api.create_namespaced_custom_object(
            self.group, self.version, self.namespace, PLURAL, body, _preload_content=False))

    def update(self, resource: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge `status` into `resource` if it has not changed since it was read. Returns the new
        resource, or None when another write came first (409) or the resource is gone (404)."""
        from kubernetes.client.exceptions import ApiException

        meta = resource["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            return raw_json(self.api.patch_namespaced_custom_object(
                self.group, self.version, self.namespace, PLURAL, meta["name"], patch,
                _content_type=_MERGE_PATCH, _preload_content=False))
        except ApiException as e:
            if e.status in (404, 409):
                return None
            raise

    def delete(self, name: str) -> None:
        """Delete the resource; one already gone is no error (two replicas may expire it at once)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                self.group, self.version, self.namespace, PLURAL, name, _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                raise
