"""Resume after a killed driver, refusals, injected faults and S3 outputs, on the session's local Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipeline.config.loading import load_config
from pipeline.output.state import OutputLock, OutputRefused
from schemas.layout import LOCK_FILE
from pipeline.execution.run import run_pipeline
from pipeline.output.verify import verify_output
from stages.utils import faults
from pipeline.output.storage import Storage
from tests.conftest import REPO

OVERRIDES = {"shards.seeds_per_shard": 1, "input.path": str(REPO / "configs" / "mini_seeds")}


def loaded(**extra):
    return load_config(REPO / "configs" / "mini.yaml", {**OVERRIDES, **extra})


def output_files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in (".tar", ".parquet")}


def manifest_rows(root):
    return pq.read_table(root / "manifest").to_pylist()


def kill_after_two_shards(command: list[str], env: dict, out) -> list[str]:
    """Start a driver, kill it (and its process group) once two shards' manifests exist; their names."""
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 240
    manifests = out / "manifest"
    while time.time() < deadline and driver.poll() is None:
        if manifests.exists() and len(list(manifests.glob("mini-*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    assert driver.poll() is None, "the run ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    return sorted(p.name for p in manifests.glob("mini-*.parquet"))


@pytest.fixture(scope="module")
def reference(local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run_pipeline(loaded(), output=str(out), log=lambda line: None)
    return out


def test_killed_driver_resumes_to_the_same_bytes_redoing_only_unfinished_shards(local_ray, reference, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "pipeline", "run", "configs/mini.yaml", "--output", str(out)]
    for key, value in OVERRIDES.items():
        command += ["--set", f"{key}={value}"]
    finished = kill_after_two_shards(command, env, out)
    manifests = out / "manifest"
    assert 2 <= len(finished) < 7
    before = {name: (manifests / name).stat().st_mtime_ns for name in finished}
    summary = run_pipeline(loaded(), output=str(out), log=lambda line: None)

    assert len(summary.skipped_shards) == len(finished)
    assert len(summary.shards) == 7 - len(finished)
    assert {name: (manifests / name).stat().st_mtime_ns for name in finished} == before
    assert output_files(out) == output_files(reference)
    assert json.loads((out / "sizes.json").read_text()) == json.loads((reference / "sizes.json").read_text())
    assert verify_output(str(out))[0] == []
    assert not (out / LOCK_FILE).exists()


def test_an_output_made_with_another_config_is_refused(reference):
    with pytest.raises(OutputRefused, match="different config"):
        run_pipeline(loaded(**{"edit.steps": 4}), output=str(reference), log=lambda line: None)


def test_a_second_run_on_a_live_output_is_refused_and_a_dead_lock_is_taken_over(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    first = OutputLock(storage)
    first.acquire()
    with pytest.raises(OutputRefused, match="being written by another run"):
        run_pipeline(loaded(), output=str(tmp_path / "out"), log=lambda line: None)
    holder = json.loads(storage.read_bytes(LOCK_FILE))
    holder["pid"] = 2**22 + 12345  # no such process: the run that held it died
    storage.write_atomic(json.dumps(holder).encode(), LOCK_FILE)
    second = OutputLock(storage)
    second.acquire()
    assert json.loads(storage.read_bytes(LOCK_FILE))["token"] == second.token
    second.release()
    assert not storage.exists(LOCK_FILE)


def test_injected_failures_become_error_rows_and_a_crashed_actor_is_retried(local_ray, reference, tmp_path, monkeypatch):
    marker = tmp_path / "filter-crashed"
    monkeypatch.setenv(faults.ENV, f"edit:3,caption:5,crash:filter:{marker}")
    out = tmp_path / "out"
    summary = run_pipeline(loaded(), output=str(out), log=lambda line: None)
    assert marker.exists()  # the filter actor really died once, and the run still finished
    assert verify_output(str(out))[0] == []
    rows, expected = manifest_rows(out), manifest_rows(reference)
    assert len(rows) == len(expected)
    for row, ref in zip(rows, expected):
        if row["seed_index"] == 3:
            assert row["status"] == "error" and row["reason"].startswith("edit: InjectedFault: injected fault in edit")
        elif row["seed_index"] == 5:
            assert row["status"] == "error" and row["reason"].startswith("caption: InjectedFault")
        else:
            assert row == ref  # nothing else lost or changed
    assert summary.stats["seeds"]["total"] == 7


def test_outputs_go_to_s3(local_ray, reference, monkeypatch):
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        uri = f"s3://cf-test/runs/mini?endpoint_override={host}:{port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
        Storage(uri).fs.create_dir("cf-test")
        run_pipeline(loaded(), output=uri, log=lambda line: None)
        assert verify_output(uri)[0] == []
        storage = Storage(uri)
        for name, data in output_files(reference).items():
            assert storage.read_bytes(name) == data, name
        again = run_pipeline(loaded(), output=uri, log=lambda line: None)  # resumes from S3: nothing to redo
        assert len(again.skipped_shards) == 7 and not again.shards
    finally:
        server.stop()


def _member_pixels(root) -> dict[str, bytes]:
    """Member key -> decoded pixels over every shard (the JPEGs' metadata names the config, whose input differs)."""
    import io

    import webdataset as wds
    from PIL import Image

    urls = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    return {s["__key__"]: Image.open(io.BytesIO(s["jpg"])).tobytes() for s in wds.WebDataset(urls, shardshuffle=False)}


def test_seeds_from_s3_are_listed_run_killed_and_resumed(local_ray, s3_endpoint, reference, tmp_path):
    """Seeds in a bucket on a real S3 endpoint (moto's server on loopback, endpoint and credentials from the
    environment as on a cluster): listed by plan, run by a driver that is killed mid-run, then resumed."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="seeds")
    seeds = REPO / "configs" / "mini_seeds"
    for path in sorted(p for p in seeds.rglob("*") if p.is_file()):
        s3.put_object(Bucket="seeds", Key=f"mini/{path.relative_to(seeds).as_posix()}", Body=path.read_bytes())
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    plan = subprocess.run([sys.executable, "-m", "pipeline", "plan", "configs/mini.yaml",
                           "--set", "input.path=s3://seeds/mini"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert "seeds: 7 (counted by listing folder s3://seeds/mini" in plan.stdout, plan.stdout + plan.stderr

    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", "run", "configs/mini.yaml", "--output", str(out),
               "--set", "shards.seeds_per_shard=1", "--set", "input.path=s3://seeds/mini", "--no-report"]
    finished = len(kill_after_two_shards(command, env, out))

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{finished} were already complete" in resumed.stdout
    assert verify_output(str(out))[0] == []
    assert "s3://seeds/mini/chef/seed0.png" in {r["source_uri"] for r in manifest_rows(out)}
    assert _member_pixels(out) == _member_pixels(reference)  # the same pixels as from the local folder
