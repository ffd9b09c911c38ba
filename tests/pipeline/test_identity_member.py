"""The identity member at production thresholds: a caption that already names the person's gender or race
makes one member of each set the value the seed shows. It is edited like the others, but the directional
check cannot apply to it (the caption does not change), so it must not fail for want of a direction."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from tests.conftest import REPO
from tests.helpers import read_output_sets

# Captions as a real captioner writes them, and by hand the member of each axis that each one names
# (mini.yaml restricts race to white, black, asian; race_gender members are {race}-{gender}).
CAPTIONS = {
    "chef/seed0.png": ("a man cooking in a kitchen", {"gender": "male", "race_gender": None}),
    "chef/seed1.png": ("a white woman slicing vegetables at a counter", {"gender": "female", "race_gender": "white-female"}),
    "authority/seed2.png": ("a Black man in a lab coat", {"gender": "male", "race_gender": "black-male"}),
    "science/seed4.png": ("an Asian woman at a desk", {"gender": "female", "race_gender": "asian-female"}),
}
IDENTITY_NOTE = "directional: identity member: no text change"


def production_thresholds() -> dict:
    production = yaml.safe_load((REPO / "configs" / "production.yaml").read_text())
    return production["filter"]["thresholds"]


@pytest.fixture(scope="module")
def output(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    paths = [str(REPO / "configs" / "mini_seeds" / name) for name in CAPTIONS]
    pq.write_table(pa.table({"path": paths, "caption": [c for c, _ in CAPTIONS.values()],
                             "seed_id": [f"id{i}" for i in range(len(paths))]}), root / "seeds.parquet")
    thresholds = production_thresholds()
    assert thresholds["directional"] == 0.2  # the setting the bug hid behind mini.yaml's -0.2
    overrides = {"input.kind": "parquet", "input.path": str(root / "seeds.parquet"),
                 **{f"filter.thresholds.{name}": value for name, value in thresholds.items()}}
    out = root / "out"
    run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))
    return out


def test_no_identity_member_fails_for_want_of_a_direction_at_production_thresholds(output):
    assert verify_output(str(output))[0] == []
    rows = pq.read_table(output / "manifest").to_pylist()
    expected = {(f"id{i}-{axis}", member) for i, (_, named) in enumerate(CAPTIONS.values())
                for axis, member in named.items() if member}
    identity = {(r["set_id"], r["member_id"]) for r in rows if r["identity_member"]}
    assert identity == expected
    for row in rows:
        if row["identity_member"]:
            assert row["status"] != "error" and row["directional"] is None
            assert row["score_notes"] == IDENTITY_NOTE
            assert "directional" not in (row["reason"] or "")
            assert row["image_image"] is not None and row["text_image"] is not None  # the other checks apply
        elif row["status"] != "error":
            assert row["directional"] is not None and row["score_notes"] is None


def test_identity_is_said_in_the_manifest_and_the_samples(output):
    rows = pq.read_table(output / "manifest").to_pylist()
    assert {r["seed_id"] for r in rows} == {f"id{i}" for i in range(len(CAPTIONS))}
    for sample in read_output_sets(output).values():
        for member in sample["members"].values():
            meta = member["meta"]
            named = list(CAPTIONS.values())[int(meta["seed_id"][2:])][1]
            assert meta["identity_member"] == (named[meta["axis"]] == meta["member_id"])
            assert (meta["score_notes"] == IDENTITY_NOTE) == meta["identity_member"]
