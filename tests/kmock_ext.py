"""kmock 0.8's KubernetesEmulator, made to behave enough like an API server for Kopf.

Stock kmock 0.8 lacks four things a real Kopf operator relies on (measured in
../shared/docs/k8s-testing.md): resourceVersion and uid stamping (Kopf's finalizer JSON-patch
tests resourceVersion; kopf owner references need a uid), 422 on a failed JSON-patch test,
a LIST resourceVersion, and a WATCH that resumes from that version instead of replaying every
object as a stale ADDED event (which re-ran on.create and made tests flaky). This subclass adds
them. It reaches into kmock internals, hence the exact pin kmock==0.8 in pyproject.toml.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import uuid
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import aiobus, enums

__all__ = ["KopfReadyEmulator", "merge_patch", "register_crd"]


class RecordingBus(aiobus.Bus):
    """A bus that keeps every event, so a watch can resume from a resourceVersion."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[dict[str, Any]] = []

    async def put(self, *items: Any) -> None:
        self.history.extend(items)
        await super().put(*items)


def _version_of(event: dict[str, Any]) -> int:
    try:
        return int(event.get("object", {}).get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return 0


def _utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class KopfReadyEmulator(kmock.KubernetesEmulator):
    _counter: itertools.count = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _last_version: int = attrs.field(default=999, init=False)
    _buses: dict = attrs.field(factory=lambda: collections.defaultdict(RecordingBus), init=False)

    def _next_version(self) -> str:
        self._last_version = next(self._counter)
        return str(self._last_version)

    def _check_precondition(self, request: Any, data: dict) -> None:
        """A merge patch naming metadata.resourceVersion applies only to that version (409 else)."""
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        if wanted is None or request.name is None:
            return
        try:
            stored = self._objects[request.resource, request.namespace, request.name]
        except KeyError:
            return
        if not stored.deleted and str(stored.raw.get("metadata", {}).get("resourceVersion")) != str(wanted):
            raise kmock.KubernetesError(status=409, reason="Conflict",
                                        message="the object has been modified; please apply your changes to the latest version")

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None:
            if request.action == enums.action.CREATE and isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _utcnow())
                meta.setdefault("generation", 1)
                if request.namespace and "namespace" not in meta:
                    meta["namespace"] = request.namespace
                meta["resourceVersion"] = self._next_version()
            elif request.action == enums.action.UPDATE:
                if isinstance(data, dict):
                    self._check_precondition(request, data)
                version = self._next_version()
                if isinstance(data, dict):
                    data.setdefault("metadata", {})["resourceVersion"] = version
                    self._bump_generation(request, data)
                elif isinstance(data, list):
                    data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            elif request.action == enums.action.DELETE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                try:
                    obj = self._objects[key]
                except KeyError:
                    obj = None
                if obj is not None and not obj.deleted:
                    obj.patch({"metadata": {"resourceVersion": self._next_version()}})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as e:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e

    def _bump_generation(self, request: Any, data: dict[str, Any]) -> None:
        """A spec change bumps metadata.generation, as the API server does for custom resources."""
        if "spec" not in data or request.subresource:
            return
        try:
            current = self._objects[request.resource, request.namespace, request.name]
        except KeyError:
            return
        if current.deleted:
            return
        before = current.get("spec") or {}
        if merge_patch(before, data["spec"]) != before:
            generation = int(current.get("metadata", {}).get("generation", 1)) + 1
            data["metadata"]["generation"] = generation

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(self._last_version)
        return result

    async def _serve_watch(self, request: Any) -> Any:
        yield b""  # send the headers now, as kmock does
        bus = self._buses[request.resource]
        since = request.params.get("resourceVersion")
        check = self._KubernetesEmulator__check
        async with self._lock:  # subscribe and snapshot atomically: nothing falls in between
            marker = await bus.mark()
            if since and since != "0":
                backlog = [e for e in bus.history if _version_of(e) > int(since)]
            else:
                objs = self._KubernetesEmulator__get_objs(request, strict=False)
                backlog = [{"type": "ADDED", "object": o.raw} for o in objs if not o.deleted]
        try:
            for event in backlog:
                if self._wanted(check, request, event):
                    yield event
            async for event in bus.stream(since=marker):
                if self._wanted(check, request, event):
                    yield event
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _wanted(check: Any, request: Any, event: dict[str, Any]) -> bool:
        meta = event.get("object", {}).get("metadata", {})
        return check(request, request.resource, meta.get("namespace"), meta.get("name"), strict=False)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, enough to tell whether a PATCH changes the spec."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def register_crd(emulator: kmock.KubernetesEmulator, crd: dict[str, Any]) -> None:
    """Serve a CRD's resource in discovery, derived from the CRD manifest itself."""
    spec, names = crd["spec"], crd["spec"]["names"]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        emulator.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular", names["kind"].lower()),
            shortnames=set(names.get("shortNames", [])),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            subresources=set(version.get("subresources", {})),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
        )
