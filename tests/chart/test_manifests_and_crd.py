"""The CRD, the example Avatar, the plain manifests and the dashboard, checked against the chart and code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_helpers import CHART, KUBE_VERSION, ROOT, container, find, render

from musetalk_operator import jobs
from musetalk_operator import metrics as operator_metrics
from musetalk_operator.config import OperatorConfig
from musetalk_server.avatars.store import AVATAR_ID_PATTERN
from musetalk_server.metrics import Metrics

CRD_PATH = ROOT / "crds" / "avatars.musetalk.io.yaml"
CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
MANIFESTS = ROOT / "manifests"
sys.path.insert(0, str(ROOT / "scripts"))
import render_manifests  # noqa: E402


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def test_the_chart_ships_the_same_crd_and_it_is_a_valid_crd() -> None:
    assert (CHART / "files" / CRD_PATH.name).read_bytes() == CRD_PATH.read_bytes()
    assert not (CHART / "crds").exists()  # Helm never templates crds/: values could not shape it
    rendered = find(render(), "CustomResourceDefinition", "avatars.musetalk.io")
    assert rendered["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert rendered == CRD
    kubernetes_validate.validate(CRD, KUBE_VERSION, strict=True)
    assert VERSION["subresources"] == {"status": {}}
    assert SCHEMA["properties"]["status"]["properties"]["phase"]["enum"] == ["Pending", "Running", "Ready", "Failed"]
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Frames"] == ".status.frames"


def test_the_chart_ships_the_renderjob_crd_for_1_20() -> None:
    path = ROOT / "crds" / "renderjobs.musetalk.io.yaml"
    crd = yaml.safe_load(path.read_text())
    assert (CHART / "files" / path.name).read_bytes() == path.read_bytes()
    rendered = find(render(), "CustomResourceDefinition", "renderjobs.musetalk.io")
    assert rendered["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"} and rendered == crd
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert "x-kubernetes-validations" not in path.read_text()  # nothing 1.20 refuses
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["State"] == ".status.state" and columns["Done"] == ".status.framesDone"
    states = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["state"]["enum"]
    from musetalk_server.render.async_jobs import JobState
    assert states == [s.value for s in JobState]


def test_the_webrtc_path_gets_its_own_sticky_ingress() -> None:
    docs = render({"ingress": {"enabled": True}})
    main, webrtc = find(docs, "Ingress", "musetalk-server"), find(docs, "Ingress", "musetalk-server-webrtc")
    assert webrtc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert "nginx.ingress.kubernetes.io/affinity" not in main["metadata"]["annotations"]
    # The rest of the ingress settings (no buffering of streams, body size) hold on both.
    assert main["metadata"]["annotations"].items() <= webrtc["metadata"]["annotations"].items()
    paths = webrtc["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/inference/webrtc", "Prefix")]
    for doc in (main, webrtc):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    off = render({"ingress": {"enabled": True, "webrtcAffinity": {"enabled": False}}})
    assert [d["metadata"]["name"] for d in off if d["kind"] == "Ingress"] == ["musetalk-server"]


def test_cel_validation_is_a_value_for_servers_before_1_25() -> None:
    without = find(render({"crds": {"celValidation": False}}), "CustomResourceDefinition", "avatars.musetalk.io")
    expected = yaml.safe_load(CRD_PATH.read_text())
    del expected["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    del expected["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    without["metadata"].pop("annotations")
    assert without == expected  # the CEL rules, and nothing else, are left out
    assert not [d for d in render({"crds": {"install": False}}) if d["kind"] == "CustomResourceDefinition"]


def test_the_example_avatar_fits_the_crd() -> None:
    example = yaml.safe_load((MANIFESTS / "examples" / "avatar.yaml").read_text())
    validator().validate(example)
    assert re.fullmatch(AVATAR_ID_PATTERN, example["metadata"]["name"])
    # The operator can turn it into a valid Job.
    example["metadata"].update(namespace="musetalk", uid="u", generation=1)
    kubernetes_validate.validate(jobs.build_job(example, OperatorConfig()), KUBE_VERSION, strict=True)


@pytest.mark.parametrize("spec, ok", [
    ({"videoPath": "uploads/a.mp4"}, True),
    ({"videoUrl": "https://host/x.mp4", "bboxShift": -20, "engine": "musetalk", "fps": 30}, True),
    ({"videoPath": "a.mp4", "resources": {"limits": {"memory": "8Gi", "nvidia.com/gpu": 1}}}, True),
    ({"videoPath": "a.mp4", "videoUrl": "https://host/x.mp4"}, False),
    ({"bboxShift": 3}, False),
    ({"videoPath": "a.mp4", "engine": "fast"}, False),
    ({"videoPath": "a.mp4", "bboxShift": 999}, False),
    ({"videoPath": "a.mp4", "fps": 0}, False),
    ({"videoPath": "a.mp4", "resources": {"limits": {"memory": "lots"}}}, False),
])
def test_the_crd_schema_validates_specs(spec: dict, ok: bool) -> None:
    avatar = {"apiVersion": "musetalk.io/v1", "kind": "Avatar", "metadata": {"name": "a"}, "spec": spec}
    errors = list(validator().iter_errors(avatar))
    assert (not errors) == ok, errors


def test_the_crd_source_rule_is_the_exactly_one_the_schema_and_the_operator_enforce() -> None:
    # No CEL interpreter here (nor a 1.25+ server): the rule is checked for its form, and the
    # structural oneOf it restates (which every server enforces) is checked above.
    spec = SCHEMA["properties"]["spec"]
    [rule] = spec["x-kubernetes-validations"]
    assert rule["rule"] == "has(self.videoPath) != has(self.videoUrl)"
    assert spec["oneOf"] == [{"required": ["videoPath"]}, {"required": ["videoUrl"]}]
    assert "spec.videoPath" in rule["message"] and "spec.videoUrl" in rule["message"]


def test_the_crd_name_rule_only_admits_ids_the_service_accepts() -> None:
    rule = SCHEMA["x-kubernetes-validations"][0]["rule"]
    pattern = re.search(r"matches\('([^']+)'\)", rule).group(1)
    assert "size(self.metadata.name) <= 63" in rule
    for name in ("a", "news-anchor", "a1-b2", "x" * 63, "A", "a.b", "-a", "a_", "x" * 64):
        admitted = bool(re.fullmatch(pattern, name)) and len(name) <= 63
        if admitted:
            assert AVATAR_ID_PATTERN.fullmatch(name) and jobs.avatar_id(name)
        else:
            with pytest.raises(jobs.InvalidAvatar):
                jobs.avatar_id(name)


def test_manifests_are_the_charts_default_install() -> None:
    assert yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"] == ["base"]
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    on_disk = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / "base" / name).read_text()):
            on_disk[(doc["kind"], doc["metadata"]["name"])] = doc
    fresh = {(d["kind"], d["metadata"]["name"]): d for docs in render_manifests.render_default().values() for d in docs}
    fresh[("Namespace", "musetalk")] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "musetalk"}}
    assert sorted(on_disk) == sorted(fresh), "run: python scripts/render_manifests.py"
    for key, doc in fresh.items():
        assert on_disk[key] == doc, f"{key} differs; run: python scripts/render_manifests.py"


def kustomize(folder: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / folder)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_valid_objects_in_one_namespace() -> None:
    docs = kustomize("")
    assert len(docs) >= 10
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert doc["metadata"]["namespace"] == "musetalk", doc["metadata"]["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_the_plain_crd_works_before_1_25_and_the_cel_overlay_adds_only_the_rule() -> None:
    plain, with_cel = kustomize(""), kustomize("cel")
    crd = next(d for d in plain if d["kind"] == "CustomResourceDefinition")
    cel_crd = next(d for d in with_cel if d["kind"] == "CustomResourceDefinition")
    assert "x-kubernetes-validations" not in json.dumps(crd)
    cel_schema = cel_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert cel_schema.pop("x-kubernetes-validations") == SCHEMA["x-kubernetes-validations"]
    spec_rules = cel_schema["properties"]["spec"].pop("x-kubernetes-validations")
    assert spec_rules == SCHEMA["properties"]["spec"]["x-kubernetes-validations"] and cel_crd == crd
    assert [d for d in with_cel if d["kind"] != "CustomResourceDefinition"] == [
        d for d in plain if d["kind"] != "CustomResourceDefinition"]


def test_the_operator_configured_by_the_chart_builds_a_valid_job() -> None:
    docs = render({"gpu": {"nodeSelector": {"pool": "gpu"}}, "settings": {"MUSETALK_ENGINE": "musetalk"}})
    env = {e["name"]: e["value"] for e in container(find(docs, "Deployment", "musetalk-operator"))["env"] if "value" in e}
    cfg = OperatorConfig.from_env(env)
    avatar = {"metadata": {"name": "demo", "namespace": "lipsync", "uid": "u", "generation": 1},
              "spec": {"videoPath": "uploads/demo.mp4", "engine": "musetalk"}}
    job = jobs.build_job(avatar, cfg)
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    server = find(docs, "Deployment", "musetalk-server")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == container(server)["image"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "musetalk-avatars"
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["securityContext"] == server["spec"]["template"]["spec"]["securityContext"]
    job_env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    server_env = {e["name"]: e["value"] for e in container(server)["env"] if "value" in e}
    # The Job preprocesses with the very settings the server will serve with.
    for key in ("MUSETALK_ENGINE", "MUSETALK_FPS", "MUSETALK_RESULT_DIR", "MUSETALK_MODEL_DIR"):
        assert job_env[key] == server_env[key]


def series_names(family) -> set[str]:
    """The series names Prometheus scrapes for a metric family, labelled or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for suffix in suffixes.get(family.type, ("",))}


def test_the_dashboard_only_charts_metrics_that_exist() -> None:
    docs = render()
    dashboard = json.loads(find(docs, "ConfigMap", "musetalk-dashboard")["data"]["musetalk.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"musetalk_[a-z_]+", e)}
    families = [*Metrics().registry.collect()]
    for metric in (operator_metrics.JOBS_STARTED, operator_metrics.JOBS_SUCCEEDED, operator_metrics.JOBS_FAILED,
                   operator_metrics.JOB_SECONDS):
        families += metric.collect()
    exported = {name for family in families for name in series_names(family)}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("frames", "first frame", "active streams", "queue depth", "preprocess jobs"):
        assert topic in titles
