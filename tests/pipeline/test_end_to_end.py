"""The mini config end to end on a local Ray: shards, manifests, verify, reproducibility, bad seeds."""

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.config import load_config
from pipeline.run import run_pipeline
from pipeline.verify import verify_output
from schemas.sample import sample_errors
from tests.conftest import REPO


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """The shipped mini seeds plus a renamed copy of one of them (a duplicate by content)."""
    root = tmp_path_factory.mktemp("seeds") / "seeds"
    shutil.copytree(REPO / "configs" / "mini_seeds", root)
    shutil.copy(root / "chef" / "seed0.png", root / "chef" / "seed9_copy.png")
    return root


@pytest.fixture(scope="module")
def runs(local_ray, seeds, tmp_path_factory):
    # The model stages ask for fractions of the session's logical GPU, as they would on a cluster.
    gpus = {"edit.resources.num_gpus": 0.5, "filter.resources.num_gpus": 0.25, "caption.resources.num_gpus": 0.25}
    loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(seeds), **gpus})
    outputs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name) / "out"
        summary = run_pipeline(loaded, output=str(out), log=lambda line: None)
        outputs.append((out, summary))
    return outputs


def manifest(out):
    return pq.read_table(out / "manifest").to_pylist()


def test_output_passes_verify_from_the_command_line(runs):
    out, summary = runs[0]
    assert verify_output(str(out))[0] == []
    result = subprocess.run([sys.executable, "-m", "pipeline", "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 0 and "verify: OK" in result.stdout
    assert summary.stats["samples"] > 0 and summary.stats["sets"].get("rejected", 0) > 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest", "run.json", "shards", "sizes.json", "stats.json"]


def test_two_runs_give_identical_shards_and_manifests(runs):
    (a, _), (b, _) = runs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".tar", ".parquet"))
    assert len(files) == 4  # 8 seeds, 4 per shard: 2 tars + 2 manifests
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "sizes.json").read_text() == (b / "sizes.json").read_text()


def test_every_input_is_accounted_for_and_the_bad_seed_is_an_error_row(runs, seeds):
    out, summary = runs[0]
    rows = manifest(out)
    inputs = [p for p in seeds.rglob("*") if p.is_file()]
    assert {r["seed_index"] for r in rows} == set(range(len(inputs)))
    broken = [r for r in rows if r["source_uri"].endswith("broken.jpg")]
    assert broken and all(r["status"] == "error" and "not a decodable image" in r["reason"] for r in broken)
    assert summary.stats["seeds"] == {"total": 8, "ok": 7, "error": 1}


def test_a_duplicate_image_is_generated_once(runs):
    out, _ = runs[0]
    rows = manifest(out)
    copy = [r for r in rows if r["source_uri"].endswith("seed9_copy.png")]
    original = [r for r in rows if r["source_uri"].endswith("chef/seed0.png")]
    assert copy and copy[0]["seed_id"] == original[0]["seed_id"]
    assert all(r["status"] == "error" and r["reason"].startswith("duplicate") and r["shard"] is None for r in copy)


def test_shards_read_back_with_webdataset_and_ray_data(runs):
    out, summary = runs[0]
    sizes = json.loads((out / "sizes.json").read_text())
    pattern = str(out / "shards" / f"mini-{{000000..{len(sizes) - 1:06d}}}.tar")
    samples = list(wds.WebDataset(pattern, shardshuffle=False))
    assert len(samples) == sum(sizes.values()) == summary.stats["samples"]
    accepted = {r["sample_key"] for r in manifest(out) if r["status"] == "accepted"}
    assert {s["__key__"] for s in samples} == accepted
    for sample in samples:
        meta = json.loads(sample["json"])
        assert sample_errors(meta) == []
        assert all(f"{m['member_id']}.jpg" in sample for m in meta["members"])

    import ray.data

    ds = ray.data.read_webdataset(str(out / "shards"), decoder=None)
    keys = sorted(row["__key__"] for row in ds.iter_rows())
    assert keys == sorted(accepted)


def test_verify_catches_a_tampered_output(runs, tmp_path):
    out, _ = runs[0]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    sizes = json.loads((copy / "sizes.json").read_text())
    first = sorted(sizes)[0]
    sizes[first] += 1
    (copy / "sizes.json").write_text(json.dumps(sizes))
    (copy / "shards" / sorted(sizes)[-1]).unlink()
    problems, _ = verify_output(str(copy))
    assert any("sizes.json says" in p for p in problems)
    assert any("without manifest" in p for p in problems)
    result = subprocess.run([sys.executable, "-m", "pipeline", "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 1 and "FAIL" in result.stdout


def test_run_json_records_config_versions_and_hash(runs):
    out, _ = runs[0]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["edit"]["model"] == "tiny:instruct-pix2pix"
    assert run["versions"]["diffusers"] and run["versions"]["ray"]
    assert {r["config_hash"] for r in manifest(out)} == {run["config_hash"]}
