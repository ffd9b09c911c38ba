"""configs/kuberay/rayjob.yaml without a cluster: its pod templates validate against Kubernetes' own schemas
(kubernetes-validate ships them), and every key it uses is a field of KubeRay's RayJob CRD for the release the
recipe names (tests/data/kuberay/, vendored from ray-project/kuberay)."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "configs" / "kuberay" / "rayjob.yaml"
RECIPE = REPO / "docs" / "recipes" / "kuberay.md"
KUBERAY = "v1.7.0"
CRD = REPO / "tests" / "data" / "kuberay" / f"ray.io_rayjobs-{KUBERAY}.yaml"
TYPES = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "number": (int, float)}


def crd_schema(version: str = "v1") -> dict:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "RayJob"
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def schema_problems(value, schema: dict, path: str = "") -> list[str]:
    """What in ``value`` the CRD's schema does not allow: unknown keys, wrong types, values outside an enum,
    missing required fields. Kubernetes' API server prunes unknown fields silently, so a misspelled key would
    otherwise just do nothing."""
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) else [f"{path}: {value!r} is neither an integer nor a string"]
    expected = TYPES.get(schema.get("type"))
    if expected and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        return [f"{path}: {value!r} is not of type {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    problems = []
    if isinstance(value, dict):
        fields, extra = schema.get("properties"), schema.get("additionalProperties")
        problems += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, sub in value.items():
            here = f"{path}.{key}"
            if fields is not None and key in fields:
                problems += schema_problems(sub, fields[key], here)
            elif isinstance(extra, dict):
                problems += schema_problems(sub, extra, here)
            elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                problems.append(f"{here}: no such field")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += schema_problems(item, schema.get("items", {}), f"{path}[{i}]")
    return problems


def crd_problems(job: dict) -> list[str]:
    # The CRD leaves the top-level metadata to the API server (it is every object's ObjectMeta): that part is
    # checked with kubernetes-validate instead.
    return sorted(schema_problems({**job, "metadata": {}}, crd_schema()))


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def pod_templates(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}}


def test_every_key_of_the_rayjob_is_a_field_of_kuberays_crd():
    job = manifest()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert crd_problems(job) == []


def test_a_misspelled_or_mistyped_key_is_caught():
    typo = manifest()
    group = typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replica"] = group.pop("replicas")
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    typo["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert crd_problems(typo) == [
        ".spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].imagePullPolicy: 3 is not of type string",
        ".spec.rayClusterSpec.workerGroupSpecs[0].replica: no such field",
        ".spec.shutdownAfterJobFinish: no such field",
    ]
    bad_mode = manifest()
    bad_mode["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    assert crd_problems(bad_mode) == [
        ".spec.rayClusterSpec.authOptions.mode: 'tokens' is not one of ['disabled', 'token']"]


@pytest.mark.parametrize("kubernetes", ["1.30.0", "1.37.0"])
def test_the_pod_templates_validate_against_kubernetes_own_schemas(kubernetes):
    job = manifest()
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": job["metadata"]}, kubernetes,
                                 strict=True)
    for name, template in pod_templates(job).items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        kubernetes_validate.validate(pod_template, kubernetes, strict=True)  # strict: unknown fields fail


def test_a_misspelled_pod_field_fails_kubernetes_validation():
    template = copy.deepcopy(pod_templates(manifest())["gpu"])
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "gpu"},
                                      "template": template}, "1.37.0", strict=True)


def test_the_job_runs_the_pipeline_on_gpu_workers_with_its_output_on_s3():
    spec = manifest()["spec"]
    assert re.fullmatch(r"python -m pipeline run configs/\S+\.yaml --output s3://\S+", spec["entrypoint"].strip())
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["HF_HUB_OFFLINE"] == "0"
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__  # the Ray the project pins (constraints.txt) and tests
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    templates = pod_templates(manifest())
    gpus = {name: int(t["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
            for name, t in templates.items()}
    assert gpus["head"] == 0 and gpus["gpu"] >= 1
    for template in templates.values():  # the driver on the head writes s3://; workers read s3:// seeds
        assert {"secretRef": {"name": "counterfactory-s3"}} in template["spec"]["containers"][0]["envFrom"]


def test_the_recipe_names_the_kuberay_release_the_crd_comes_from():
    assert f"KubeRay {KUBERAY}" in RECIPE.read_text()
    assert f"KubeRay {KUBERAY}" in MANIFEST.read_text()
    assert f"tag **{KUBERAY}**" in (CRD.parent / "README.md").read_text()
