"""Operator settings: the one place the operator reads its environment (MUSETALK_OPERATOR_*)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GROUP", "VERSION", "PLURAL", "KIND", "OperatorConfig", "ConfigError"]

# The Avatar CRD's coordinates (crds/avatars.musetalk.io.yaml).
GROUP = "musetalk.io"
VERSION = "v1"
PLURAL = "avatars"
KIND = "Avatar"

PREFIX = "MUSETALK_OPERATOR_"

# Matches the service image's non-root user (service/Dockerfile), so Job pods can write the volume.
DEFAULT_POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}}
DEFAULT_JOB_RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "12Gi"}}


class ConfigError(ValueError):
    """An operator setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class OperatorConfig:
    """How preprocessing Jobs are built and where the avatars volume is."""

    image: str = "musetalk-server:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    pvc_name: str = "musetalk-avatars"
    data_dir: Path = Path("/data")  # the volume as the operator itself sees it (for cleanup)
    job_data_dir: str = "/data"  # where Job pods mount the same volume
    gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    deadline_s: int = 3600
    backoff_limit: int = 1
    ttl_s: int | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_JOB_RESOURCES)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    pod_security_context: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_POD_SECURITY_CONTEXT)
    job_env: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    namespace: str | None = None  # None: every namespace (needs cluster-wide RBAC)
    metrics_port: int = 8080
    post_events: bool = True
    # How long deletion waits for preprocessing pods to stop. A pod on a lost node stays
    # Terminating forever; after this the finalizer reports it and cleans up anyway.
    cleanup_wait_s: int = 120

    @property
    def avatar_root(self) -> Path:
        """The AvatarStore root on the volume; the service uses <result_dir>/avatars likewise."""
        return self.data_dir / "avatars"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value if value not in (None, "") else None

        kw: dict[str, Any] = {}
        for name, attr in (("IMAGE", "image"), ("IMAGE_PULL_POLICY", "image_pull_policy"),
                           ("PVC", "pvc_name"), ("JOB_DATA_DIR", "job_data_dir"),
                           ("GPU_RESOURCE", "gpu_resource"), ("SERVICE_ACCOUNT", "service_account"),
                           ("NAMESPACE", "namespace")):
            if (value := get(name)) is not None:
                kw[attr] = value
        if (value := get("DATA_DIR")) is not None:
            kw["data_dir"] = Path(value)
        for name, attr in (("GPUS", "gpus"), ("DEADLINE_S", "deadline_s"), ("BACKOFF_LIMIT", "backoff_limit"),
                           ("TTL_S", "ttl_s"), ("METRICS_PORT", "metrics_port"),
                           ("CLEANUP_WAIT_S", "cleanup_wait_s")):
            if (value := get(name)) is not None:
                kw[attr] = _int(PREFIX + name, value)
        if (value := get("POST_EVENTS")) is not None:
            kw["post_events"] = value.strip().lower() in ("1", "true", "yes", "on")
        for name, attr, kind in (("RESOURCES", "resources", dict), ("NODE_SELECTOR", "node_selector", dict),
                                 ("TOLERATIONS", "tolerations", list), ("JOB_ENV", "job_env", dict),
                                 ("POD_SECURITY_CONTEXT", "pod_security_context", dict),
                                 ("IMAGE_PULL_SECRETS", "image_pull_secrets", list)):
            if (value := get(name)) is not None:
                parsed = _json(PREFIX + name, value, kind)
                kw[attr] = tuple(parsed) if kind is list else parsed
        return cls(**kw)


def _int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError as e:
        raise ConfigError(f"{name}={value!r} is not an integer") from e
    if number < 0:
        raise ConfigError(f"{name}={value!r} must not be negative")
    return number


def _json(name: str, value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name} is not valid JSON: {e}") from e
    if not isinstance(parsed, kind):
        raise ConfigError(f"{name} must be a JSON {kind.__name__}, got {type(parsed).__name__}")
    return parsed
