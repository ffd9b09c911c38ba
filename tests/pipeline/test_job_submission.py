"""`ray job submit` of the mini-run to a real two-node Ray cluster with token authentication; a third node lost
mid-run."""

import json
import os
import re
import time

import psutil
import pytest
import yaml

from pipeline.output.verify import verify_output
from tests.conftest import MINI_GPUS, REPO
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


def _alive(nodes: list[dict]) -> set[str]:
    return {n["node_id"] for n in nodes if n["state"] == "ALIVE"}


def test_a_worker_node_lost_mid_run_costs_nothing_but_time(cluster, mini_seeds, mini_output, tmp_path):
    """A second GPU worker joins the cluster; its raylet is killed once it has done some of the run's work. The run
    finishes anyway and writes the bytes the uninterrupted session mini-run wrote (the same config: configs/mini.yaml
    over the same seeds, model stages on the same GPU fractions)."""
    before = _alive(cluster.nodes())
    ports = LocalCluster.node_ports()
    raylet_port = next(p.split("=")[1] for p in ports if p.startswith("--node-manager-port="))
    joined = cluster.ray("start", f"--address=127.0.0.1:{cluster.gcs_port}", "--num-cpus=2", "--num-gpus=2",
                         "--disable-usage-stats", *ports)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    deadline = time.time() + 90
    while time.time() < deadline and len(_alive(cluster.nodes()) - before) < 1:
        time.sleep(1)
    (doomed,) = _alive(cluster.nodes()) - before

    out = tmp_path / "out"
    sets = [f"{key}={value}" for key, value in MINI_GPUS.items()] + [f"input.path={mini_seeds}"]
    job = f"node-loss-{os.getpid()}"
    submitted = cluster.ray("job", "submit", "--address", cluster.dashboard, "--no-wait", "--submission-id", job,
                            "--runtime-env", str(_runtime_env(tmp_path)), "--", "python", "-m", "pipeline", "run",
                            "configs/mini.yaml", "--output", str(out), *[a for s in sets for a in ("--set", s)])
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]

    # Mid-run: the new node has done some of the run's work and the job is still running, so what it held (its
    # actors, their queued batches, its objects) is lost with it.
    deadline = time.time() + 600
    while time.time() < deadline and _status(cluster, job) in ("PENDING", "RUNNING") and not _worked_on(cluster,
                                                                                                        doomed):
        time.sleep(1)
    raylets = [p for p in psutil.process_iter(["cmdline"]) if "raylet" in (p.info["cmdline"] or [""])[0]
               and f"--node_manager_port={raylet_port}" in p.info["cmdline"]]
    assert len(raylets) == 1
    running = _status(cluster, job)
    raylets[0].kill()
    assert running == "RUNNING", running

    deadline = time.time() + 600  # UNKNOWN: the job API did not answer while the cluster noticed the loss
    while time.time() < deadline and _status(cluster, job) in ("PENDING", "RUNNING", "UNKNOWN"):
        time.sleep(2)
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, job).stdout
    assert _status(cluster, job) == "SUCCEEDED", logs[-4000:]
    assert doomed not in _alive(cluster.nodes())
    assert verify_output(str(out))[0] == []
    for folder in ("shards", "sets", "manifest"):
        ours = sorted(p.name for p in (out / folder).iterdir())
        assert ours == sorted(p.name for p in (mini_output / folder).iterdir()) and ours
        for name in ours:
            assert (out / folder / name).read_bytes() == (mini_output / folder / name).read_bytes(), f"{folder}/{name}"


def _runtime_env(tmp_path):
    runtime_env = yaml.safe_load((REPO / "configs" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    runtime_env["env_vars"].update(HF_HUB_OFFLINE="1", COUNTERFACTORY_CACHE=os.environ["COUNTERFACTORY_CACHE"])
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env))
    return path


def _worked_on(cluster, node_id: str) -> bool:
    """Whether one of the run's stage actors has finished a batch on the node."""
    listed = cluster.ray("list", "tasks", "--address", cluster.dashboard, "--filter", "state=FINISHED", "--detail",
                         "--format", "json", "--limit", "10000")
    try:
        tasks = json.loads(listed.stdout) if listed.returncode == 0 else []
    except ValueError:  # "No resource in the cluster": no task yet
        tasks = []
    return any(t.get("node_id") == node_id and t.get("name", "").startswith("MapWorker") for t in tasks)


def _status(cluster, job: str) -> str:
    shown = cluster.ray("job", "status", "--address", cluster.dashboard, job)
    found = re.search(r"Status for job '[^']+': (?:JobStatus\.)?(\w+)", shown.stdout + shown.stderr)
    return found.group(1) if found else "UNKNOWN"
