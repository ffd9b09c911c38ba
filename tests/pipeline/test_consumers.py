"""The shipped mini outputs read with the consumers' own code, not ours: Hugging Face ``datasets``, Ray Data's
default webdataset reader, ``webdataset`` with its PIL decoder, and a torch DataLoader with two workers.
Every accepted member image and every attribute value the manifest lists must arrive, each once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch.utils.data
import webdataset as wds
from PIL import Image


@pytest.fixture(scope="module", params=["mini", "mini_generate"])
def output(request):
    return request.getfixturevalue("mini_output" if request.param == "mini" else "mini_generate_output")


def expected(out) -> tuple[dict, set]:
    """From the manifest alone: member key -> {attribute: value}, and the accepted set ids."""
    rows = [r for r in pq.read_table(out / "manifest").to_pylist() if r["status"] == "accepted"]
    assert rows, "the mini output accepted nothing: nothing to read"
    return {r["sample_key"]: json.loads(r["attributes"]) for r in rows}, {r["set_id"] for r in rows}


def tars(out, family: str = "shards") -> list[str]:
    return [str(p) for p in sorted((out / family).glob("*.tar"))]


def labels(meta: dict) -> dict:
    return {a["attribute"]: a["value"] for a in meta["attributes"]}


def test_hugging_face_datasets_loads_every_member_image_and_label(output, tmp_path):
    import datasets

    members, sets = expected(output)
    ds = datasets.load_dataset("webdataset", data_files={"train": tars(output)}, split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["jpg"], datasets.Image)
    assert ds.num_rows == len(members)
    found = {row["__key__"]: row for row in ds}
    assert {k: labels(row["json"]) for k, row in found.items()} == members
    assert all(isinstance(row["jpg"], Image.Image) and row["jpg"].size[0] > 0 for row in found.values())
    whole = datasets.load_dataset("webdataset", data_files={"train": tars(output, "sets")}, split="train",
                                  cache_dir=str(tmp_path / "hf-sets"))
    assert sorted(whole["__key__"]) == sorted(sets)
    assert sorted(m["key"] for s in whole["json"] for m in s["members"]) == sorted(members)


def test_ray_data_reads_every_member_with_its_default_decoder(output, local_ray):
    import ray.data

    members, sets = expected(output)
    rows = ray.data.read_webdataset(tars(output)).take_all()
    assert len(rows) == len(members)
    assert {row["__key__"]: labels(row["json"]) for row in rows} == members
    assert all(row["jpg"].ndim == 3 and row["jpg"].shape[2] == 3 for row in rows)
    assert sorted(row["__key__"] for row in ray.data.read_webdataset(tars(output, "sets")).take_all()) == sorted(sets)


def test_webdataset_decodes_every_member_to_pil(output):
    members, _ = expected(output)
    samples = list(wds.WebDataset(tars(output), shardshuffle=False).decode("pil"))
    assert {s["__key__"]: labels(s["json"]) for s in samples} == members
    assert all(isinstance(s["jpg"], Image.Image) for s in samples)


def _key_and_labels(sample: dict) -> tuple[str, str]:
    return sample["__key__"], json.dumps(labels(sample["json"]), sort_keys=True)


def test_a_two_worker_torch_dataloader_sees_every_member_once(output):
    members, _ = expected(output)
    pipeline = wds.WebDataset(tars(output), shardshuffle=False, workersplitter=wds.split_by_worker)
    loader = torch.utils.data.DataLoader(pipeline.decode("pil").map(_key_and_labels), num_workers=2, batch_size=None)
    seen = list(loader)
    assert len(seen) == len(members)  # none twice, none lost
    assert {key: json.loads(found) for key, found in seen} == members


CROISSANT_LOAD = """
import json, sys
import mlcroissant as mlc
dataset = mlc.Dataset(jsonld=sys.argv[1])
issues = dataset.metadata.ctx.issues
records = [{k.split("/")[1]: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items() if k != "members/image"}
           | {"image_size": list(r["members/image"].size)} for r in dataset.records("members")]
print(json.dumps({"errors": sorted(issues.errors), "warnings": sorted(issues.warnings), "records": records}))
"""


def test_croissant_validates_without_warnings_and_loads_every_member_with_its_labels(output, tmp_path):
    members, _ = expected(output)
    # mlcroissant caches tar extractions by relative contentUrl and never refreshes them: a fresh cache per output
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "croissant-cache")}
    croissant = str(output / "croissant.json")
    cli = str(Path(sys.executable).with_name("mlcroissant"))  # the console script pip installs
    validate = subprocess.run([cli, "validate", "--jsonld", croissant],
                              capture_output=True, text=True, env=env, timeout=300)
    assert validate.returncode == 0, validate.stderr
    assert [line for line in validate.stderr.splitlines() if line.startswith(("W", "E"))] == []
    load = subprocess.run([sys.executable, "-c", CROISSANT_LOAD, croissant], capture_output=True, text=True,
                          env=env, timeout=300)
    assert load.returncode == 0, load.stderr[-2000:]
    result = json.loads(load.stdout.splitlines()[-1])
    assert result["errors"] == [] and result["warnings"] == []
    assert {r["key"]: json.loads(r["attributes"]) for r in result["records"]} == members
    assert all(r["image_size"][0] > 0 and r["concept"] and r["set_id"] for r in result["records"])
    meta = json.loads((output / "croissant.json").read_text())
    assert meta["version"] == "1.0.0" and meta["citeAs"] and meta["datePublished"]
    assert meta["identifier"].endswith(json.loads((output / "run.json").read_text())["config_hash"])
