"""Avatar -> batch/v1 Job manifest. Pure: a dict in, a dict out, no cluster calls.

The Job runs the service image's own preprocessing entry point (`musetalk-server preprocess`),
the same code path local mode runs inline, and writes the avatar atomically onto the shared
volume. Its result (or error) comes back through the container's termination message.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from .config import GROUP, KIND, VERSION, OperatorConfig

__all__ = [
    "AVATAR_LABEL",
    "GENERATION_LABEL",
    "RETRY_ANNOTATION",
    "CONTAINER",
    "InvalidAvatar",
    "avatar_id",
    "job_name",
    "job_name_for",
    "job_labels",
    "build_job",
    "video_argument",
]

AVATAR_LABEL = f"{GROUP}/avatar"
GENERATION_LABEL = f"{GROUP}/generation"
# Changing this annotation's value (any value, e.g. a timestamp) starts a fresh Job for the current
# spec: how a Failed Avatar is retried without deleting it or touching its spec. Not under
# `musetalk.io/`: Kopf keeps its own state there and leaves every such annotation out of the
# changes it reports, so a handler would never see this one change.
RETRY_ANNOTATION = f"operator.{GROUP}/retry"
CONTAINER = "preprocess"
TERMINATION_LOG = "/dev/termination-log"
VOLUME = "avatars"
TMP_VOLUME = "tmp"  # the root filesystem is read-only; a URL source is fetched into /tmp
# Non-root, read-only, no capabilities, no privilege escalation, the runtime's seccomp filter.
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# metadata.name is the avatar id; the CRD narrows it to a DNS label, which fits the service's
# ^[A-Za-z0-9_-]{1,64}$. Checked again here because CEL rules are skipped on old API servers.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The CRD's videoPath rule: relative, no '..', no hidden segments.
_VOLUME_PATH = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
MAX_NAME = 63  # Job names become a pod label value, which Kubernetes caps at 63 characters


class InvalidAvatar(ValueError):
    """The Avatar cannot become a Job (bad name or source). Retrying will not help."""


def avatar_id(name: str) -> str:
    if not _DNS_LABEL.fullmatch(name or ""):
        raise InvalidAvatar(f"metadata.name {name!r} must be a DNS label (it is the avatar id)")
    return name


def job_name(name: str, generation: int, retry: str = "") -> str:
    """One Job per spec generation and retry token, so neither a spec change nor a retry collides
    with the previous Job."""
    prefix, suffix = f"avatar-{name}", f"-g{generation}"
    if retry:
        suffix += "-r" + hashlib.sha256(retry.encode()).hexdigest()[:6]
    if len(prefix) + len(suffix) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        prefix = f"{prefix[: MAX_NAME - len(suffix) - len(digest) - 1].rstrip('-')}-{digest}"
    return prefix + suffix


def job_name_for(avatar: Mapping[str, Any]) -> str:
    """The name of the Job the Avatar's current generation and retry token call for."""
    meta = avatar["metadata"]
    retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION, "")
    return job_name(avatar_id(meta["name"]), int(meta.get("generation", 1)), retry)


def job_labels(name: str, generation: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "musetalk",
        "app.kubernetes.io/component": "preprocess",
        "app.kubernetes.io/managed-by": "musetalk-operator",
        AVATAR_LABEL: name,
        GENERATION_LABEL: str(generation),
    }


def video_argument(spec: Mapping[str, Any], data_dir: str) -> str:
    """The --video value: a path inside the Job's volume mount, or the URL as given."""
    path, url = spec.get("videoPath"), spec.get("videoUrl")
    if (path is None) == (url is None):
        given = "both" if path is not None else "neither"
        raise InvalidAvatar(f"spec needs exactly one video source, videoPath or videoUrl; it has {given}")
    if path is not None:
        if not _VOLUME_PATH.fullmatch(str(path)):
            raise InvalidAvatar(f"spec.videoPath {path!r} must be relative to the volume, without '..'")
        return f"{data_dir.rstrip('/')}/{path}"
    if not _URL.fullmatch(str(url)):
        raise InvalidAvatar(f"spec.videoUrl {url!r} must be an http(s) URL")
    return str(url)


def container_args(name: str, spec: Mapping[str, Any], data_dir: str) -> list[str]:
    args = [
        "--avatar-id", name,
        "--video", video_argument(spec, data_dir),
        "--bbox-shift", str(int(spec.get("bboxShift", 0))),
        "--engine", str(spec.get("engine", "auto")),
    ]
    if spec.get("fps") is not None:
        args += ["--fps", str(spec["fps"])]
    # --overwrite: the resource owns its avatar folder, and a spec change must replace it.
    return [*args, "--result-dir", data_dir, "--overwrite", "--result-json", TERMINATION_LOG]


def container_resources(spec: Mapping[str, Any], cfg: OperatorConfig) -> dict[str, dict[str, Any]]:
    requests = dict(cfg.resources.get("requests", {}))
    limits = dict(cfg.resources.get("limits", {}))
    # The lite engine is CPU-only; holding a GPU for it would starve the inference pods.
    if cfg.gpus > 0 and spec.get("engine", "auto") != "lite":
        limits[cfg.gpu_resource] = cfg.gpus
    override = spec.get("resources") or {}
    requests.update(override.get("requests", {}))
    limits.update(override.get("limits", {}))
    # Quantities as strings: the API takes int-or-string, but the kubernetes client's models only str.
    return {key: {name: str(q) for name, q in value.items()}
            for key, value in (("requests", requests), ("limits", limits)) if value}


def build_job(avatar: Mapping[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """The Job that preprocesses this Avatar's current generation."""
    meta, spec = avatar["metadata"], avatar.get("spec") or {}
    name, generation = avatar_id(meta["name"]), int(meta.get("generation", 1))
    labels = job_labels(name, generation)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["musetalk-server", "preprocess"],
        "args": container_args(name, spec, cfg.job_data_dir),
        "env": [{"name": key, "value": str(value)} for key, value in sorted(cfg.job_env.items())],
        "resources": container_resources(spec, cfg),
        "volumeMounts": [{"name": VOLUME, "mountPath": cfg.job_data_dir}, {"name": TMP_VOLUME, "mountPath": "/tmp"}],
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the CLI could write its JSON still leaves the log tail as the reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the preprocessing pod never talks to the API
        "securityContext": dict(cfg.pod_security_context),
        "containers": [container],
        "volumes": [{"name": VOLUME, "persistentVolumeClaim": {"claimName": cfg.pvc_name}},
                    {"name": TMP_VOLUME, "emptyDir": {}}],
    }
    if cfg.node_selector:
        pod_spec["nodeSelector"] = dict(cfg.node_selector)
    if cfg.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in cfg.tolerations]
    if cfg.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in cfg.image_pull_secrets]
    if cfg.service_account:
        pod_spec["serviceAccountName"] = cfg.service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": cfg.backoff_limit,
        "activeDeadlineSeconds": cfg.deadline_s,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if cfg.ttl_s is not None:
        job_spec["ttlSecondsAfterFinished"] = cfg.ttl_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name_for(avatar),
            "namespace": meta["namespace"],
            "labels": labels,
            # Controller owner: deleting the Avatar garbage-collects the Job even without the operator.
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name, "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": job_spec,
    }
