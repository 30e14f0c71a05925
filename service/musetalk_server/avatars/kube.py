"""Cluster mode (MUSETALK_AVATAR_SOURCE=kubernetes): avatars are Avatar resources.

The server never preprocesses here. An upload is kept on the shared volume, an Avatar resource
names it, the operator's Job builds the avatar onto the same volume, and this module waits for
the resource to turn Ready. The frames are then read from the volume like any local avatar, so
every replica serves every avatar, also those created with `kubectl apply`.

All calls are blocking (the official client); callers run them on worker threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .. import errors
from ..config import Settings
from ..errors import AvatarExists, AvatarNotFound, MuseTalkError, NotReady, PreprocessTimeout

__all__ = ["AvatarResources", "CustomResources", "ServingCheck", "Identity", "UPLOAD_ANNOTATION", "failure_error",
           "custom_objects_api", "raw_json"]

log = logging.getLogger(__name__)

PLURAL, KIND = "avatars", "Avatar"
UPLOAD_ANNOTATION = "musetalk.io/upload"  # the operator's finalizer deletes this file with the avatar


class CustomResources:
    """Custom resources of one kind (`plural`) in one namespace, through the Kubernetes API: what
    Avatars (here) and RenderJobs (render/job_resources.py) read alike."""

    plural: ClassVar[str]

    def __init__(self, settings: Settings, api: Any = None) -> None:
        self.namespace = settings.namespace
        self.group, self.version = settings.crd_group, settings.crd_version
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = custom_objects_api()
        return self._api

    def get(self, name: str) -> dict[str, Any] | None:
        """The resource, or None when there is none by that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            return raw_json(self.api.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, name, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self) -> list[dict[str, Any]]:
        """Every resource of the kind in the namespace, by name."""
        listed = raw_json(self.api.list_namespaced_custom_object(
            self.group, self.version, self.namespace, self.plural, _preload_content=False))
        return sorted(listed.get("items", []), key=lambda item: item["metadata"]["name"])


class AvatarResources(CustomResources):
    """Avatar resources in one namespace, through the Kubernetes API."""

    plural = PLURAL

    def __init__(self, settings: Settings, api: Any = None) -> None:
        super().__init__(settings, api)
        self.poll_s = settings.kube_poll_s

    def submit(self, avatar_id: str, spec: dict[str, Any], upload: str, overwrite: bool,
               annotations: dict[str, str] | None = None) -> tuple[int, str | None]:
        """Create the Avatar, or replace its spec. Returns (generation to wait for, replaced upload)."""
        annotations = {UPLOAD_ANNOTATION: upload, **(annotations or {})}
        body = {"apiVersion": f"{self.group}/{self.version}", "kind": KIND,
                "metadata": {"name": avatar_id, "annotations": annotations}, "spec": spec}
        current = self.get(avatar_id)
        if current is None:
            created = raw_json(self.api.create_namespaced_custom_object(
                self.group, self.version, self.namespace, PLURAL, body, _preload_content=False))
            return int(created["metadata"].get("generation", 1)), None
        if not overwrite:
            raise AvatarExists(f"avatar {avatar_id!r} already exists; pass overwrite=true to replace it")
        # Replace the whole spec (null drops fields the new one lacks, e.g. a previous videoUrl).
        patch_spec = dict.fromkeys(current.get("spec", {})) | spec
        patched = raw_json(self.api.patch_namespaced_custom_object(
            self.group, self.version, self.namespace, PLURAL, avatar_id,
            {"metadata": {"annotations": annotations}, "spec": patch_spec}, _preload_content=False))
        old = (current["metadata"].get("annotations") or {}).get(UPLOAD_ANNOTATION)
        return int(patched["metadata"].get("generation", 1)), old if old != upload else None

    def delete(self, avatar_id: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                self.group, self.version, self.namespace, PLURAL, avatar_id, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                raise AvatarNotFound(f"avatar {avatar_id!r} does not exist") from e
            raise

    def wait_ready(self, avatar_id: str, generation: int, timeout_s: float,
                   stopping: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Poll until the operator reports this generation Ready; raise what it reports otherwise.

        A replica shutting down stops waiting with 503 not_ready: the resource carries on, and the
        same request retried (on another replica) waits for the same avatar (avatars/idempotency.py)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if stopping():
                raise NotReady(f"this replica is shutting down; avatar {avatar_id!r} is still being "
                               "preprocessed: retry the same request")
            avatar = self.get(avatar_id)
            if avatar is None:
                raise AvatarNotFound(f"avatar {avatar_id!r} was deleted while it was being preprocessed")
            status = avatar.get("status") or {}
            if int(status.get("observedGeneration") or 0) >= generation:
                if status.get("phase") == "Ready":
                    return status
                if status.get("phase") == "Failed":
                    raise failure_error(status.get("message") or "preprocessing failed")
            if time.monotonic() >= deadline:
                raise PreprocessTimeout(
                    f"avatar {avatar_id!r} is still {status.get('phase') or 'Pending'} after {timeout_s:.0f}s; "
                    f"it keeps going: watch GET /avatars or `kubectl get avatar {avatar_id}`")
            time.sleep(self.poll_s)


Identity = tuple[str, int | None]  # the resource's uid, and the generation it was last Ready at


class ServingCheck:
    """Whether an avatar may be served, read from its Avatar resource, at most every `recheck_s`.

    Files on the shared volume outlive a delete until the operator's finalizer removes them, and
    a network volume's attribute cache may hide an overwrite for a while; the resource does
    neither. A replica re-reads it at most every `recheck_s`, so a delete or an overwrite through
    any replica (or kubectl) reaches every replica within that time. While the API server cannot
    be reached, the last answer stands (no delete or overwrite can be made then either).
    """

    _PRUNE_AT = 1024  # remembered answers (ids asked for, existing or not) before old ones go

    def __init__(self, resources: AvatarResources, recheck_s: float) -> None:
        self.resources, self.recheck_s = resources, recheck_s
        self._seen: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def identity(self, avatar_id: str) -> Identity:
        """Blocking: the Ready identity of the avatar's resource; AvatarNotFound when there is none."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(avatar_id)
        if seen is not None and now - seen[0] < self.recheck_s:
            identity = seen[1]
        else:
            identity = self._read(avatar_id, seen)
            with self._lock:
                self._remember(avatar_id, now, identity)
        if identity is None:
            raise AvatarNotFound(f"avatar {avatar_id!r} does not exist; preprocess it first")
        return identity

    def forget(self, avatar_id: str) -> None:
        """This replica changed the resource itself: the next request reads it again."""
        with self._lock:
            self._seen.pop(avatar_id, None)

    def _read(self, avatar_id: str, seen: tuple[float, Identity | None] | None) -> Identity | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return serving_identity(self.resources.get(avatar_id))
        except (ApiException, HTTPError, OSError):
            if seen is None:
                raise
            log.warning("cannot read Avatar %s; serving on its last known state", avatar_id, exc_info=True)
            return seen[1]

    def _remember(self, avatar_id: str, now: float, identity: Identity | None) -> None:
        if len(self._seen) >= self._PRUNE_AT:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.recheck_s}
        self._seen[avatar_id] = (now, identity)


def serving_identity(resource: dict[str, Any] | None) -> Identity | None:
    """None for no resource or one being deleted; else its uid and the generation it is Ready at
    (None while a new one is being built: what is on the volume then is still the last Ready)."""
    if resource is None or resource["metadata"].get("deletionTimestamp"):
        return None
    status = resource.get("status") or {}
    ready = int(status.get("observedGeneration") or 0) if status.get("phase") == "Ready" else None
    return str(resource["metadata"].get("uid", "")), ready


def failure_error(message: str) -> MuseTalkError:
    """The operator reports the CLI's failure as '<code>: <detail>'; give the client the same error
    local mode would have raised (e.g. 422 no_face_detected)."""
    code, sep, detail = message.partition(": ")
    for name in errors.__all__:
        cls = getattr(errors, name)
        is_error = isinstance(cls, type) and issubclass(cls, MuseTalkError)
        if sep and is_error and cls.code == code and cls is not MuseTalkError:
            return cls(detail)
    return errors.EngineError(f"preprocessing failed: {message}")


def upload_name(avatar_id: str, token: str, suffix: str) -> str:
    """Path of a kept upload, relative to the volume root (the CRD's videoPath rule)."""
    return f"uploads/{avatar_id}-{token}{suffix.lower() if suffix[1:].isalnum() else ''}"


def remove_upload(result_dir: Path, relative: str | None) -> None:
    if relative:
        (Path(result_dir) / relative).unlink(missing_ok=True)


def raw_json(response: Any) -> dict[str, Any]:
    # Raw bodies: the client's typed deserialisation of custom objects is not relied upon.
    return json.loads(response.data)


def custom_objects_api() -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # outside a pod: ~/.kube/config
    return client.CustomObjectsApi(client.ApiClient(configuration))
