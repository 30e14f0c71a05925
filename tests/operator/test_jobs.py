"""Avatar spec -> Job manifest, and operator settings from the environment. Pure, no cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from musetalk_operator import jobs
from musetalk_operator.config import ConfigError, OperatorConfig

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "avatars.musetalk.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def avatar(name: str = "alice", generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "musetalk.io/v1", "kind": "Avatar",
            "metadata": {"name": name, "namespace": "prod", "uid": "u-1", "generation": generation},
            "spec": spec or {"videoPath": "uploads/alice.mp4"}}


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_job_runs_the_cli_on_the_volume_with_gpu_deadline_and_owner() -> None:
    cfg = OperatorConfig(image="reg/musetalk:1", pvc_name="avatars-pvc", gpus=1, deadline_s=900, backoff_limit=2,
                         job_env={"MUSETALK_MODEL_DIR": "/data/models"})
    job = jobs.build_job(avatar(videoPath="uploads/alice.mp4", bboxShift=-4, engine="musetalk", fps=30), cfg)
    c = container(job)
    assert c["command"] == ["musetalk-server", "preprocess"]
    assert c["args"] == ["--avatar-id", "alice", "--video", "/data/uploads/alice.mp4", "--bbox-shift", "-4",
                         "--engine", "musetalk", "--fps", "30", "--result-dir", "/data", "--overwrite",
                         "--result-json", "/dev/termination-log"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["env"] == [{"name": "MUSETALK_MODEL_DIR", "value": "/data/models"}]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["volumeMounts"] == [{"name": "avatars", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}]
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 900 and spec["backoffLimit"] == 2
    assert spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "avatars-pvc"}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "musetalk.io/v1", "kind": "Avatar", "name": "alice", "uid": "u-1",
                     "controller": True, "blockOwnerDeletion": True}
    assert job["metadata"]["labels"]["musetalk.io/generation"] == "1"
    assert spec["template"]["metadata"]["labels"]["musetalk.io/avatar"] == "alice"
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_url_source_scheduling_and_resource_overrides() -> None:
    cfg = OperatorConfig(node_selector={"gpu": "a100"}, gpus=2,
                         tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                         image_pull_secrets=("regcred",), ttl_s=600)
    job = jobs.build_job(avatar(videoUrl="https://example.com/v.mp4",
                                resources={"limits": {"memory": "20Gi", "nvidia.com/gpu": 1}}), cfg)
    c = container(job)
    assert c["args"][3] == "https://example.com/v.mp4"
    assert c["resources"]["limits"] == {"memory": "20Gi", "nvidia.com/gpu": "1"}  # the spec wins
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and job["spec"]["ttlSecondsAfterFinished"] == 600
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_lite_engine_holds_no_gpu() -> None:
    job = jobs.build_job(avatar(videoPath="a.mp4", engine="lite"), OperatorConfig(gpus=1))
    assert "nvidia.com/gpu" not in container(job)["resources"].get("limits", {})


@pytest.mark.parametrize("spec", [
    {"videoPath": "../etc/passwd"}, {"videoPath": "/abs/path.mp4"}, {"videoPath": "a/../../b"},
    {"videoPath": ".hidden/x.mp4"}, {"videoUrl": "file:///etc/passwd"}, {"videoUrl": "ftp://x/y"},
    {}, {"videoPath": "a.mp4", "videoUrl": "https://x/y.mp4"},
])
def test_bad_sources_are_refused_by_the_operator_and_the_crd(spec: dict[str, Any]) -> None:
    with pytest.raises(jobs.InvalidAvatar):
        jobs.build_job(avatar(**spec) if spec else {**avatar(), "spec": {}}, OperatorConfig())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(avatar(**spec) if spec else {**avatar(), "spec": {}}, SCHEMA)


@pytest.mark.parametrize("name", ["Alice", "a.b", "a_b", "-a", "x" * 64, ""])
def test_names_that_are_not_dns_labels_are_refused(name: str) -> None:
    with pytest.raises(jobs.InvalidAvatar):
        jobs.build_job(avatar(name=name), OperatorConfig())


def test_job_names_are_unique_per_generation_and_fit_a_label() -> None:
    assert jobs.job_name("alice", 1) == "avatar-alice-g1"
    assert jobs.job_name("alice", 2) != jobs.job_name("alice", 1)
    long_a, long_b = "a" * 62 + "b", "a" * 62 + "c"
    for name in (long_a, long_b):
        assert len(jobs.job_name(name, 12345)) <= 63
    assert jobs.job_name(long_a, 3) != jobs.job_name(long_b, 3)
    job = jobs.build_job(avatar(name=long_a, generation=12345), OperatorConfig())
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_settings_come_from_the_environment() -> None:
    env = {"MUSETALK_OPERATOR_IMAGE": "r/i:2", "MUSETALK_OPERATOR_GPUS": "0", "MUSETALK_OPERATOR_DATA_DIR": "/v",
           "MUSETALK_OPERATOR_TOLERATIONS": '[{"key": "k", "operator": "Exists"}]',
           "MUSETALK_OPERATOR_JOB_ENV": '{"MUSETALK_FPS": "25"}', "MUSETALK_OPERATOR_POST_EVENTS": "false",
           "MUSETALK_OPERATOR_NAMESPACE": ""}
    cfg = OperatorConfig.from_env(env)
    assert (cfg.image, cfg.gpus, cfg.avatar_root, cfg.post_events) == ("r/i:2", 0, Path("/v/avatars"), False)
    assert cfg.tolerations == ({"key": "k", "operator": "Exists"},) and cfg.job_env == {"MUSETALK_FPS": "25"}
    assert cfg.namespace is None  # empty means every namespace
    with pytest.raises(ConfigError, match="MUSETALK_OPERATOR_GPUS"):
        OperatorConfig.from_env({"MUSETALK_OPERATOR_GPUS": "many"})
    with pytest.raises(ConfigError, match="JSON list"):
        OperatorConfig.from_env({"MUSETALK_OPERATOR_TOLERATIONS": "{}"})


def test_a_retry_token_names_a_new_job_for_the_same_generation() -> None:
    plain = avatar()
    retried = avatar()
    retried["metadata"]["annotations"] = {jobs.RETRY_ANNOTATION: "2030-01-01T00:00:00Z"}
    first, second = jobs.job_name_for(plain), jobs.job_name_for(retried)
    assert first == "avatar-alice-g1" and second.startswith("avatar-alice-g1-r") and len(second) == len(first) + 8
    assert jobs.build_job(retried, OperatorConfig())["metadata"]["name"] == second
    assert jobs.job_name_for(retried) == second  # the same token is the same Job: re-running is a no-op
    long = avatar(name="x" * 63)
    long["metadata"]["annotations"] = {jobs.RETRY_ANNOTATION: "1"}
    assert len(jobs.job_name_for(long)) <= jobs.MAX_NAME


@pytest.mark.parametrize("spec, says", [
    ({"bboxShift": 3}, "exactly one video source, videoPath or videoUrl; it has neither"),
    ({"videoPath": "a.mp4", "videoUrl": "https://h/x.mp4"}, "it has both"),
])
def test_a_spec_without_one_source_says_which_way_it_is_wrong(spec: dict, says: str) -> None:
    with pytest.raises(jobs.InvalidAvatar, match=re.escape(says)):
        jobs.build_job(avatar(**spec), OperatorConfig())


def test_every_setting_is_listed_with_its_default_and_the_bind_address_is_one() -> None:
    from musetalk_operator.config import SETTINGS, describe_settings

    listed = describe_settings()
    for setting in SETTINGS:
        assert f"MUSETALK_OPERATOR_{setting.name} " in listed
    assert "MUSETALK_OPERATOR_CLEANUP_WAIT_S" in listed and "(default: 120)" in listed
    assert OperatorConfig.from_env({"MUSETALK_OPERATOR_BIND_ADDRESS": "127.0.0.1"}).bind_address == "127.0.0.1"
    assert OperatorConfig().bind_address == "0.0.0.0"  # in a pod, the probes come from the kubelet
