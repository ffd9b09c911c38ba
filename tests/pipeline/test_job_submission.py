"""`ray job submit` of the mini-run to a real two-node Ray cluster with token authentication."""

import json
import os

import pytest
import yaml

from pipeline.output.verify import verify_output
from tests.conftest import REPO
from tests.ray_cluster import LocalCluster

GPU_STAGES = ["--set", "edit.resources.num_gpus=0.5", "--set", "caption.resources.num_gpus=0.25",
              "--set", "filter.resources.num_gpus=0.25"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_cache):
    """A CPU-only head node and a worker node with two logical GPUs."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start(worker_cpus=2, worker_gpus=2)
    finally:
        cluster.stop()


def test_the_mini_job_runs_on_the_cluster_with_gpu_stages_on_the_gpu_node(cluster, tmp_path):
    env_file = _runtime_env(tmp_path)
    assert {".venv/", ".git/", "out/"} <= set(yaml.safe_load(env_file.read_text())["excludes"])
    out = tmp_path / "out"

    submitted = cluster.submit(
        "--runtime-env", str(env_file), "--",
        "python", "-m", "pipeline", "run", "configs/mini.yaml", "--output", str(out), *GPU_STAGES,
        "--limit", "1", "--no-report",  # placement is on trial, not the amount of work: one seed goes through every stage
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout + submitted.stderr
    assert verify_output(str(out))[0] == []

    nodes = cluster.nodes()
    gpu_nodes = {n["node_id"] for n in nodes if float(n["resources_total"].get("GPU", 0)) > 0}
    assert len(nodes) == 2 and len(gpu_nodes) == 1
    listed = cluster.ray("list", "actors", "--address", cluster.dashboard, "--detail", "--format", "json", "--limit", "1000")
    actors = [a for a in json.loads(listed.stdout) if a["class_name"].startswith("MapWorker")]
    on_gpus = [a for a in actors if float((a.get("required_resources") or {}).get("GPU", 0)) > 0]
    stages_on_gpus = {name for a in on_gpus for name in ("CaptionStage", "EditStage", "FilterStage") if name in a["class_name"]}
    assert stages_on_gpus == {"CaptionStage", "EditStage", "FilterStage"}
    assert {a["node_id"] for a in on_gpus} <= gpu_nodes
    cpu_only = [a for a in actors if "IngestStage" in a["class_name"] or "PlanStage" in a["class_name"]]
    assert cpu_only and not any(a in on_gpus for a in cpu_only)


def test_the_job_api_refuses_a_client_without_the_cluster_token(cluster, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    refused = cluster.ray("job", "list", "--address", cluster.dashboard, env={**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert refused.returncode != 0
    allowed = cluster.ray("job", "list", "--address", cluster.dashboard)
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def _runtime_env(tmp_path):
    runtime_env = yaml.safe_load((REPO / "configs" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    runtime_env["env_vars"].update(HF_HUB_OFFLINE="1", COUNTERFACTORY_CACHE=os.environ["COUNTERFACTORY_CACHE"])
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env))
    return path
