"""configs/slurm/counterfactory.sbatch through a real single-node Slurm (Debian's slurm-wlm and munge): the job
starts Ray from the allocation, runs the mini config, and leaves a verified output and no Ray behind."""

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pipeline.output.verify import verify_output
from tests.conftest import REPO
from tests.ray_cluster import LocalCluster, free_port
from tests import slurm_cluster

LAUNCHER = REPO / "configs" / "slurm" / "counterfactory.sbatch"


@pytest.fixture(scope="module")
def slurm():
    absent = slurm_cluster.missing()
    if absent:
        pytest.skip(f"Slurm and munge are not installed (no {', '.join(absent)}): "
                    "apt-get install slurm-wlm munge (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("slurmd launches jobs as root only; run the Slurm test as root (CI does)")
    # One CPU more than the machine has: Ray can only have counted them from Slurm's allocation.
    cluster = slurm_cluster.LocalSlurm(cpus=(os.cpu_count() or 1) + 1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _job_env(tmp_path: Path, ray_temp: Path, *start_args: str) -> dict:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home"),
           "COUNTERFACTORY_RAY_LOGS": str(tmp_path / "ray"),
           "COUNTERFACTORY_RAY_PORT": str(free_port()), "COUNTERFACTORY_RAY_HEAD_IP": "127.0.0.1",
           "COUNTERFACTORY_RAY_START_ARGS": " ".join([f"--temp-dir={ray_temp}", "--include-dashboard=false",
                                                      *LocalCluster.node_ports(), *start_args])}
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return env


def test_a_head_that_cannot_start_fails_the_job_at_once_not_after_the_wait(slurm, tmp_path):
    log = tmp_path / "job.log"
    ray_temp = Path(tempfile.mkdtemp(prefix="cfsr-", dir="/tmp"))
    env = _job_env(tmp_path, ray_temp, "--num-cpus=not-a-number")  # `ray start` refuses it and exits
    started = time.time()
    job = slurm.sbatch("--nodes=1", f"--output={log}", str(LAUNCHER), "configs/mini.yaml", "--output",
                       str(tmp_path / "out"), cwd=REPO, env=env)
    try:
        state = slurm.wait(job, timeout=240)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    took = time.time() - started
    text = log.read_text()
    assert state == "FAILED", text[-3000:]
    assert "counterfactory-slurm: the Ray head's step ended before the cluster was up" in text, text[-3000:]
    assert took < 120, f"{took:.0f} s: the launcher waited for a head that had already failed"  # the wait is 300 s
    assert not (tmp_path / "out").exists()


def test_the_sbatch_launcher_runs_the_mini_config_on_ray_from_the_allocation(slurm, tiny_cache, tmp_path):
    out, log = tmp_path / "out", tmp_path / "job.log"
    ray_temp = Path(tempfile.mkdtemp(prefix="cfsr-", dir="/tmp"))  # short: Ray's unix sockets live under it
    env = _job_env(tmp_path, ray_temp)
    started = time.time()
    job = slurm.sbatch("--nodes=1", f"--output={log}", str(LAUNCHER), "configs/mini.yaml", "--output", str(out),
                       cwd=REPO, env=env)
    try:
        state = slurm.wait(job, timeout=900)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    print(f"slurm job {job}: {state} in {time.time() - started:.1f} s")
    text = log.read_text()
    assert state == "COMPLETED", text[-4000:] + slurm.logs()

    assert f"1 node(s) up: {slurm.cpus} CPUs, 0 GPUs" in text
    assert "seeds:      7 listed, 6 decoded, 1 errors" in text  # configs/mini_seeds: 7 files, one broken
    assert verify_output(str(out))[0] == []
    # Ray stopped with the job: none of its processes is left, and the job's token is gone.
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(ray_temp) in " ".join(p.info["cmdline"] or [])]
    assert left == []
    assert not list((tmp_path / "home" / ".counterfactory" / "ray-tokens").iterdir())
    assert re.search(r"Ray head on \S+ \(127\.0\.0\.1:\d+\)", text)
    assert "Ray runtime started" in (tmp_path / "ray" / "head.log").read_text()
