import io
import json
import tarfile

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from schemas.records import MANIFEST
from schemas.sample import sample_errors
from stages.shard_writer import ShardConfig, ShardWriter
from stages.storage import Storage
from tests.helpers import noise_image

PROVENANCE = {
    "models": {"captioner": "cap", "editor": "edit", "clip": "clip"},
    "generation": {"steps": 2},
    "run_seed": 1,
    "config_hash": "abc123",
    "concept_groups": {"chef": "responsibility"},
}


def set_row(index: int, status: str) -> dict:
    image = noise_image(index, 16)
    members = [
        {"member_id": m, "attributes": [{"attribute": "gender", "value": m}], "phrase": f"a {m}",
         "target_caption": f"a {m} cooking", "instruction": f"turn into a {m}"}
        for m in ("male", "female")
    ]
    candidates = []
    for c in range(2):
        for m in ("male", "female"):
            chosen = c == 0 and status == "accepted"
            candidates.append({
                "member_id": m, "candidate": c, "noise_seed": 100 + c, "image_rgb": noise_image(index + c, 16).tobytes(),
                "width": 16, "height": 16, "error": None, "text_image": 0.3, "directional": 0.25, "image_image": 0.8,
                "attribute_margin": 0.1, "failed_checks": [], "status": "accepted" if chosen else "rejected",
                "reason": None if chosen else "not chosen",
            })
    return {
        "seed_index": index, "shard_index": 0, "source_uri": f"seeds/{index}.png", "source_member": None,
        "source_seed_id": None, "concept": "chef", "caption": "a man cooking", "seed_id": f"s{index}",
        "image_rgb": image.tobytes(), "width": 16, "height": 16, "status": "ok", "error": None,
        "set_id": f"s{index}-gender", "axis": "gender", "concept_source": "source", "members": members,
        "candidate_seeds": [100, 101], "candidates": candidates, "set_status": status,
        "set_reason": None if status == "accepted" else "1 of 2 members passed",
    }


def write(tmp_path, rows):
    writer = ShardWriter(ShardConfig(prefix="t"), Storage(str(tmp_path)), PROVENANCE)
    writer.setup()
    return writer.write_shard(3, rows)


def test_accepted_sets_go_in_the_tar_and_every_candidate_in_the_manifest(tmp_path):
    result = write(tmp_path, [set_row(1, "rejected"), set_row(0, "accepted")])
    assert (result.tar_name, result.samples, result.manifest_rows) == ("t-000003.tar", 1, 8)
    with tarfile.open(tmp_path / "shards" / "t-000003.tar") as tar:
        assert tar.getnames() == ["s0-gender.src.jpg", "s0-gender.male.jpg", "s0-gender.female.jpg", "s0-gender.json"]
    manifest = pq.read_table(tmp_path / "manifest" / "t-000003.parquet")
    assert manifest.schema.names == MANIFEST.names
    rows = manifest.to_pylist()
    assert [r["seed_index"] for r in rows] == [0] * 4 + [1] * 4
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert [(r["member_id"], r["shard"], r["file"]) for r in accepted] == [
        ("male", "t-000003.tar", "male.jpg"), ("female", "t-000003.tar", "female.jpg")]
    assert all(r["shard"] is None and r["reason"] for r in rows if r["status"] != "accepted")
    assert not list((tmp_path / "shards").glob(".tmp-*"))


def test_shards_read_back_with_plain_webdataset_and_match_the_json_schema(tmp_path):
    write(tmp_path, [set_row(0, "accepted")])
    (sample,) = list(wds.WebDataset(str(tmp_path / "shards" / "t-000003.tar"), shardshuffle=False))
    assert sample["__key__"] == "s0-gender"
    meta = json.loads(sample["json"])
    assert sample_errors(meta) == []
    assert meta["synthetic"] is True and meta["concept_group"] == "responsibility"
    assert [m["file"] for m in meta["members"]] == ["male.jpg", "female.jpg"]
    assert Image.open(io.BytesIO(sample["female.jpg"])).size == (16, 16)


def test_the_same_rows_give_the_same_bytes(tmp_path):
    write(tmp_path / "a", [set_row(0, "accepted")])
    write(tmp_path / "b", [set_row(0, "accepted")])
    for part in ("shards/t-000003.tar", "manifest/t-000003.parquet"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes()
