"""`ray job submit` of the mini-run to a real three-node Ray cluster with token authentication: the GPU stages go
to the GPU nodes, and a GPU node lost mid-run costs nothing but time (one job shows both)."""

import json
import os
import re
import time

import psutil
import pytest
import yaml

from pipeline.output.verify import verify_output
from stages.utils import faults
from tests.conftest import MINI_GPUS, REPO
from tests.ray_cluster import LocalCluster

GPU_STAGE_NAMES = ("CaptionStage", "EditStage", "FilterStage")

# A three-node cluster, a whole mini job and a node's recovery: on a machine busy with the other xdist worker's
# runs this has taken 544 s, near the suite's 600 s a test.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_cache):
    """A CPU-only head node and two worker nodes with two logical GPUs each."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start(worker_cpus=2, worker_gpus=2, workers=2)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def lost_node_job(cluster, mini_seeds, tmp_path_factory):
    """The session mini-run's config submitted as a job (configs/mini.yaml over the same seeds, its model stages
    on the same GPU fractions, but each stage in a pool of its own, as on a cluster: the session's are fused); once
    the edit stage's actor has finished a batch, its node's raylet is killed while the job runs, so what the node
    held (the editor mid-work, its queued batches, its objects) is lost with it."""
    root = tmp_path_factory.mktemp("job")
    # The editor waits 1 s before each of its batches, so that work is left when its node goes: on an idle machine
    # the mini job's edits could end before the first look found the working editor, and nothing was restarted.
    env_file = _runtime_env(root, {faults.ENV: "slow:edit:1"})
    out, job = root / "out", f"mini-{os.getpid()}"
    sets = {**MINI_GPUS, "ray.fuse": "[]", "input.path": str(mini_seeds)}
    submitted = cluster.ray("job", "submit", "--address", cluster.dashboard, "--no-wait", "--submission-id", job,
                            "--runtime-env", str(env_file), "--", "python", "-m", "pipeline", "run",
                            "configs/mini.yaml", "--output", str(out),
                            *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")])
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]

    deadline, doomed = time.time() + 600, None  # a loaded machine (the other xdist worker) can take minutes
    while time.time() < deadline and doomed is None and _status(cluster, job) in ("PENDING", "RUNNING"):
        doomed = _node_of_the_working_editor(cluster)
        time.sleep(3)  # each look is two `ray list` processes: a CPU's worth if run back to back
    assert doomed, f"the editor finished no batch while the job ran ({_status(cluster, job)})"
    running = _status(cluster, job)
    (raylet,) = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].endswith("raylet")
                 and f"--node_id={doomed}" in p.info["cmdline"]]
    raylet.kill()
    assert running == "RUNNING", running

    deadline = time.time() + 600
    while time.time() < deadline and _status(cluster, job) in ("PENDING", "RUNNING"):
        time.sleep(2)
    return {"status": _status(cluster, job), "out": out, "doomed": doomed, "env_file": env_file,
            "logs": cluster.ray("job", "logs", "--address", cluster.dashboard, job).stdout}


def test_the_mini_job_runs_on_the_cluster_with_gpu_stages_on_the_gpu_nodes(cluster, lost_node_job):
    assert {".venv/", ".git/", "out/"} <= set(yaml.safe_load(lost_node_job["env_file"].read_text())["excludes"])
    assert lost_node_job["status"] == "SUCCEEDED", lost_node_job["logs"][-4000:]
    assert verify_output(str(lost_node_job["out"]))[0] == []

    nodes = cluster.nodes()
    gpu_nodes = {n["node_id"] for n in nodes if float(n["resources_total"].get("GPU", 0)) > 0}
    assert len(nodes) == 3 and len(gpu_nodes) == 2  # the lost node is still listed, as DEAD
    actors = [a for a in _stage_actors(cluster)]
    on_gpus = [a for a in actors if float((a.get("required_resources") or {}).get("GPU", 0)) > 0]
    assert {name for a in on_gpus for name in GPU_STAGE_NAMES if name in a["class_name"]} == set(GPU_STAGE_NAMES)
    assert {a["node_id"] for a in on_gpus} <= gpu_nodes
    cpu_only = [a for a in actors if "IngestStage" in a["class_name"] or "SetsStage" in a["class_name"]]
    assert cpu_only and not any(a in on_gpus for a in cpu_only)


def test_a_gpu_node_lost_mid_run_costs_nothing_but_time(cluster, lost_node_job, mini_output):
    assert lost_node_job["status"] == "SUCCEEDED", lost_node_job["logs"][-4000:]
    states = {n["node_id"]: n["state"] for n in cluster.nodes()}
    assert states[lost_node_job["doomed"]] == "DEAD" and list(states.values()).count("ALIVE") == 2
    # the editor lost with the node was started again on the other GPU node and finished the run's edits there;
    # the output is the session mini-run's byte for byte, though that run fused its stages into two pools
    (editor,) = [a for a in _stage_actors(cluster) if "EditStage" in a["class_name"]]
    assert int(editor.get("num_restarts") or 0) >= 1 and editor["node_id"] not in (lost_node_job["doomed"], None)
    out = lost_node_job["out"]
    for folder in ("shards", "sets", "manifest"):
        ours = sorted(p.name for p in (out / folder).iterdir())
        assert ours == sorted(p.name for p in (mini_output / folder).iterdir()) and ours
        for name in ours:
            assert (out / folder / name).read_bytes() == (mini_output / folder / name).read_bytes(), f"{folder}/{name}"


def test_the_job_api_refuses_a_client_without_the_cluster_token(cluster, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    refused = cluster.ray("job", "list", "--address", cluster.dashboard, env={**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert refused.returncode != 0
    allowed = cluster.ray("job", "list", "--address", cluster.dashboard)
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def _runtime_env(tmp_path, env_vars: dict[str, str]):
    runtime_env = yaml.safe_load((REPO / "configs" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    runtime_env["env_vars"].update(HF_HUB_OFFLINE="1", COUNTERFACTORY_CACHE=os.environ["COUNTERFACTORY_CACHE"],
                                   **env_vars)
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env))
    return path


def _stage_actors(cluster) -> list[dict]:
    listed = cluster.ray("list", "actors", "--address", cluster.dashboard, "--detail", "--format", "json",
                         "--limit", "1000")
    return [a for a in json.loads(listed.stdout) if a["class_name"].startswith("MapWorker")]


def _node_of_the_working_editor(cluster) -> str | None:
    """The node of the edit stage's actor, once it has finished a batch there and is still alive (more to edit)."""
    listed = cluster.ray("list", "tasks", "--address", cluster.dashboard, "--filter", "state=FINISHED", "--detail",
                         "--format", "json", "--limit", "10000")
    try:
        tasks = json.loads(listed.stdout) if listed.returncode == 0 else []
    except ValueError:  # "No resource in the cluster": no task yet
        tasks = []
    done = {t["node_id"] for t in tasks if t.get("name", "").endswith("(EditStage)).submit")}
    alive = {a["node_id"] for a in _stage_actors(cluster) if "EditStage" in a["class_name"] and a["state"] == "ALIVE"}
    return next(iter(done & alive), None)


def _status(cluster, job: str) -> str:
    """The job's status as `ray job status` prints it: a line for a running job, a banner for an ended one."""
    shown = cluster.ray("job", "status", "--address", cluster.dashboard, job)
    text = shown.stdout + shown.stderr
    for banner, status in (("succeeded", "SUCCEEDED"), ("failed", "FAILED"), ("was stopped", "STOPPED")):
        if f"Job '{job}' {banner}" in text:
            return status
    found = re.search(r"Status for job '[^']+': (?:JobStatus\.)?(\w+)", text)
    return found.group(1) if found else "PENDING"  # the job API not answering yet (a busy head) is not an end
