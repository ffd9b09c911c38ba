"""Resume after a killed driver, refusals, injected faults, a full disk, and seeds and outputs on S3, on the
session's local Ray.

The module's runs read the mini seeds from a bucket on the session's S3 endpoint (moto's server on loopback, its
address and credentials in the environment as on a cluster); its reference run writes to S3 too."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.commands import cli
from pipeline.config.loading import load_config
from pipeline.output.state import OutputLock, OutputRefused
from schemas.layout import LOCK_FILE
from pipeline.execution.local import run_local
from pipeline.execution.run import run_pipeline
from pipeline.output.verify import verify_output
from stages.utils import faults
from pipeline.output.storage import Storage
from tests.conftest import REPO
from tests.helpers import injected_faults

SEEDS = "s3://seeds/mini"


def loaded(**extra):
    return load_config(REPO / "configs" / "mini.yaml", {"shards.seeds_per_shard": 1, "input.path": SEEDS, **extra})


def output_files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in (".tar", ".parquet")}


def manifest_rows(root):
    return pq.read_table(root / "manifest").to_pylist()


def kill_after_two_shards(command: list[str], env: dict, out) -> list[str]:
    """Start a driver, kill it (and its process group) once two shards' manifests exist; their names."""
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 600  # a loaded machine (another xdist worker, other jobs) can take minutes
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
def s3_seeds(s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="seeds")
    seeds = REPO / "configs" / "mini_seeds"
    for path in sorted(p for p in seeds.rglob("*") if p.is_file()):
        s3.put_object(Bucket="seeds", Key=f"mini/{path.relative_to(seeds).as_posix()}", Body=path.read_bytes())
    # the mini_seeds fixture's copy of a photo (a duplicate by content, seed 5 of seed 3): both executors, the
    # kill and the resume all meet it
    s3.put_object(Bucket="seeds", Key="mini/chef/seed9_copy.png", Body=(seeds / "chef" / "seed0.png").read_bytes())
    return SEEDS


@pytest.fixture(scope="module")
def reference(local_ray, s3_endpoint, s3_seeds, tmp_path_factory):
    """The module's reference run: seeds from S3, output to S3 (pyarrow takes the endpoint in the URI); a local
    copy of the output for the comparisons."""
    host_port = s3_endpoint.split("://", 1)[1]
    uri = f"s3://outputs/mini?endpoint_override={host_port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    Storage(uri).fs.create_dir("outputs")
    lines = []
    summary = run_pipeline(loaded(), output=uri, log=lines.append, report=False)
    local = tmp_path_factory.mktemp("reference") / "out"
    storage = Storage(uri)
    pafs.copy_files(storage.root, str(local), source_filesystem=storage.fs)
    return {"uri": uri, "summary": summary, "log": lines, "out": local}


def _member_pixels(root) -> dict[str, bytes]:
    """Member key -> decoded pixels over every shard (the JPEGs' metadata names the config, whose input differs)."""
    import io

    import webdataset as wds
    from PIL import Image

    urls = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    return {s["__key__"]: Image.open(io.BytesIO(s["jpg"])).tobytes() for s in wds.WebDataset(urls, shardshuffle=False)}


def test_seeds_listed_from_s3_and_an_output_written_to_s3_resume_with_nothing_to_redo(reference, mini_output, capsys):
    assert cli.main(["plan", str(REPO / "configs" / "mini.yaml"), "--set", f"input.path={SEEDS}"]) == 0
    assert f"seeds: 8 (counted by listing folder {SEEDS}" in capsys.readouterr().out
    assert reference["log"][0].startswith(f"counterfactory: 8 seeds listed from {SEEDS}")
    assert len(reference["summary"].shards) == 8
    assert verify_output(reference["uri"])[0] == []
    assert f"{SEEDS}/chef/seed0.png" in {r["source_uri"] for r in manifest_rows(reference["out"])}
    assert _member_pixels(reference["out"]) == _member_pixels(mini_output)  # the pixels of the local folder's run

    again = run_pipeline(loaded(), output=reference["uri"], log=lambda line: None, report=False)  # resumes from S3
    assert len(again.skipped_shards) == 8 and not again.shards


def test_killed_driver_resumes_to_the_same_bytes_redoing_only_unfinished_shards(local_ray, reference, tmp_path,
                                                                                monkeypatch):
    """A driver killed after two shards; the resume redoes only the rest, and its filter actor dies once on the way
    (restarted, its batch retried): the output is the uninterrupted run's, byte for byte."""
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "pipeline", "run", "configs/mini.yaml", "--output", str(out),
               "--set", "shards.seeds_per_shard=1", "--set", f"input.path={SEEDS}", "--no-report"]
    finished = kill_after_two_shards(command, env, out)
    manifests = out / "manifest"
    assert 2 <= len(finished) < 8
    before = {name: (manifests / name).stat().st_mtime_ns for name in finished}
    crashed = tmp_path / "filter-crashed"
    monkeypatch.setenv(faults.ENV, f"crash:filter:{crashed}")
    lines = []
    summary = run_pipeline(loaded(), output=str(out), log=lines.append, report=False)
    assert crashed.exists()  # the filter actor really died once, and the run still finished

    assert f"counterfactory: resuming: {len(finished)} shard(s) already complete" in "\n".join(lines)
    assert len(summary.skipped_shards) == len(finished)
    assert len(summary.shards) == 8 - len(finished)
    assert {name: (manifests / name).stat().st_mtime_ns for name in finished} == before
    assert output_files(out) == output_files(reference["out"])
    assert json.loads((out / "sizes.json").read_text()) == json.loads((reference["out"] / "sizes.json").read_text())
    assert verify_output(str(out))[0] == []
    assert not (out / LOCK_FILE).exists()


def test_an_output_made_with_another_config_is_refused(reference):
    with pytest.raises(OutputRefused, match="different config"):
        run_pipeline(loaded(**{"edit.steps": 4}), output=reference["uri"], log=lambda line: None)


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


def test_injected_failures_become_error_rows_and_nothing_else_changes(reference, tmp_path):
    """Faults raised in two stages (the same code on Ray and in this process; the resume test crashes an actor
    on Ray): those seeds become error rows naming the stage, every other row is the reference run's, the copy's
    included: both executors mark the same seed as a repeat, with the same rows (one dedupe rule)."""
    out = tmp_path / "out"
    with injected_faults("edit:4,caption:6"):
        run_local(loaded(), str(out))
    assert verify_output(str(out))[0] == []
    rows, expected = manifest_rows(out), manifest_rows(reference["out"])
    assert len(rows) == len(expected)
    for found in (rows, expected):  # seed 5 (chef/seed9_copy.png) holds seed 3's bytes (chef/seed0.png)
        repeats = {(r["seed_index"], r["seed_status"], r["reason"]) for r in found if "duplicate" in (r["reason"] or "")}
        assert repeats == {(5, "error", "ingest: duplicate: same image as seed_index 3")}
    for row, ref in zip(rows, expected):
        if row["seed_index"] == 4:
            assert row["status"] == "error" and row["reason"].startswith("edit: InjectedFault: injected fault in edit")
        elif row["seed_index"] == 6:
            assert row["status"] == "error" and row["reason"].startswith("caption: InjectedFault")
        else:  # nothing else lost or changed: CLIP scores at one thread in any process, so both executors agree
            assert row == ref


def test_a_full_disk_is_one_line(local_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # mini.yaml's input.path is relative to the repository
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs a small tmpfs (mount as root) to fill")
    try:
        code = cli.main(["run", str(REPO / "configs" / "mini.yaml"), "--output", str(disk / "out"), "--no-report"])
        stderr = capsys.readouterr().err
        assert code == 7, stderr[-1500:]
        ours = [line for line in stderr.splitlines() if line.startswith("error:")]  # Ray logs its own too
        assert len(ours) == 1 and "no space left on device" in ours[0] and "free space" in ours[0]
    finally:
        subprocess.run(["umount", str(disk)])
