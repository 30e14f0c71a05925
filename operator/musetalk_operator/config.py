"""Operator settings: the one place the operator reads its environment (MUSETALK_OPERATOR_*)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GROUP", "VERSION", "PLURAL", "KIND", "OperatorConfig", "ConfigError", "SETTINGS", "describe_settings"]

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
    bind_address: str = "0.0.0.0"  # of the metrics and /healthz endpoints; 127.0.0.1 for a local run
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
        kw: dict[str, Any] = {}
        for setting in SETTINGS:
            value = env.get(PREFIX + setting.name)
            if value not in (None, ""):
                kw[setting.attr] = setting.parse(PREFIX + setting.name, str(value))
        return cls(**kw)


@dataclass(frozen=True)
class Setting:
    """One MUSETALK_OPERATOR_* variable: the field it sets, how it is read, what it means."""

    name: str
    attr: str
    kind: str  # str, path, int, bool, or a JSON kind: object, list
    help: str

    def parse(self, variable: str, value: str) -> Any:
        if self.kind == "int":
            return _int(variable, value)
        if self.kind == "bool":
            return value.strip().lower() in ("1", "true", "yes", "on")
        if self.kind == "path":
            return Path(value)
        if self.kind == "object":
            return _json(variable, value, dict)
        if self.kind == "list":
            return tuple(_json(variable, value, list))
        return value


SETTINGS = (
    Setting("NAMESPACE", "namespace", "str", "the one namespace to watch; unset: all (needs cluster-wide RBAC)"),
    Setting("IMAGE", "image", "str", "the preprocessing Jobs' image (the service image)"),
    Setting("IMAGE_PULL_POLICY", "image_pull_policy", "str", "the Jobs' imagePullPolicy"),
    Setting("IMAGE_PULL_SECRETS", "image_pull_secrets", "list", "JSON list of Secret names for the Jobs' image"),
    Setting("PVC", "pvc_name", "str", "the avatars volume's PersistentVolumeClaim, mounted by the Jobs"),
    Setting("DATA_DIR", "data_dir", "path", "where the operator itself sees that volume (cleanup on delete)"),
    Setting("JOB_DATA_DIR", "job_data_dir", "str", "where the Jobs mount it"),
    Setting("GPUS", "gpus", "int", "GPUs per Job (never for the lite engine); 0: none"),
    Setting("GPU_RESOURCE", "gpu_resource", "str", "the GPU's resource name"),
    Setting("DEADLINE_S", "deadline_s", "int", "a Job's activeDeadlineSeconds"),
    Setting("BACKOFF_LIMIT", "backoff_limit", "int", "a Job's backoffLimit (retries of a failed pod)"),
    Setting("TTL_S", "ttl_s", "int", "a finished Job's ttlSecondsAfterFinished; unset: kept until its Avatar goes"),
    Setting("RESOURCES", "resources", "object", "JSON requests/limits of the Jobs' container"),
    Setting("NODE_SELECTOR", "node_selector", "object", "JSON nodeSelector of the Jobs' pods"),
    Setting("TOLERATIONS", "tolerations", "list", "JSON tolerations of the Jobs' pods"),
    Setting("POD_SECURITY_CONTEXT", "pod_security_context", "object", "JSON securityContext of the Jobs' pods"),
    Setting("JOB_ENV", "job_env", "object", "JSON MUSETALK_* environment of the Jobs' container"),
    Setting("SERVICE_ACCOUNT", "service_account", "str", "the Jobs' ServiceAccount; unset: the namespace default"),
    Setting("METRICS_PORT", "metrics_port", "int", "Prometheus metrics port"),
    Setting("BIND_ADDRESS", "bind_address", "str", "address the metrics and /healthz endpoints listen on"),
    Setting("POST_EVENTS", "post_events", "bool", "record Events on Avatars"),
    Setting("CLEANUP_WAIT_S", "cleanup_wait_s", "int", "how long deletion waits for Job pods to stop (and retries)"),
)


def describe_settings() -> str:
    """The settings with their defaults, for `musetalk-operator --help`."""
    defaults = OperatorConfig()
    lines = []
    for setting in SETTINGS:
        default = getattr(defaults, setting.attr)
        if setting.kind in ("object", "list"):
            default = json.dumps(list(default) if setting.kind == "list" else dict(default))
        lines.append(f"  {PREFIX + setting.name:<40} {setting.help} (default: {default})")
    return "\n".join(lines)


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
