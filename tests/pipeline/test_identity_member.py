"""The identity member at production's directional threshold: a caption that already names the person's gender or
race makes one member of each set the value the seed shows. It is edited like the others, but the directional
check cannot apply to it (the caption does not change), so it must not fail for want of a direction.

The editor here changes nothing (each member is the seed crop, pixel for pixel), so what the filter decides is
known by hand: every other member's image did not move, directional 0.0 < production's 0.2 ("no edit
direction"), and fails; an identity member has no direction to check, image_image 1.0 >= production's 0.7, and
passes. text_image and attribute_margin are off: the tiny random CLIP scores every image under production's
text_image and its zero-shot margins are noise (tests/stages/test_filter_production.py runs every production
threshold on images built to pass and fail). With ``min_members: 1`` a set with an identity member is kept
with that member alone."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml

from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from stages.edit import registry
from stages.edit.base import Editor
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
# 4 seeds x 2 axes = 8 sets; every caption names a gender, three a race: 7 identity members, one a set, so 7 sets
# kept (seed0's race_gender set has none and is rejected) and 7 member samples.
IDENTITY_MEMBERS = 7
SIDE = 96  # the mini seeds' size: the seed crop at edit.resolution 96 is the seed itself
IDENTITY_NOTE = "directional: identity member: no text change"


class UnchangedEditor(Editor):
    """Every member is the seed crop as it is."""

    backend = "unchanged"
    summary = "the seed crop, unchanged (a test backend)"

    @classmethod
    def denoiser_evals_per_step(cls, edit) -> int:
        return 1

    def load(self):
        return "no weights"

    def render(self, source, jobs: list[dict]) -> list[np.ndarray]:
        return [np.asarray(source).copy() for _ in jobs]


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
    assert (thresholds["directional"], thresholds["image_image"]) == (0.2, 0.7)  # directional: what mini's -0.2 hid
    overrides = {"input.kind": "parquet", "input.path": str(root / "seeds.parquet"), "edit.backend": "unchanged",
                 "edit.resolution": SIDE, "filter.min_members": 1,
                 "filter.thresholds.directional": thresholds["directional"],
                 "filter.thresholds.image_image": thresholds["image_image"],
                 "filter.thresholds.text_image": None, "filter.thresholds.attribute_margin": None}
    out = root / "out"
    registry.register(UnchangedEditor)
    try:
        run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))
    finally:
        del registry.BACKENDS["unchanged"]
    return out


def test_no_identity_member_fails_for_want_of_a_direction_at_production_thresholds(output):
    assert verify_output(str(output))[0] == []
    rows = pq.read_table(output / "manifest").to_pylist()
    expected = {(f"id{i}-{axis}", member) for i, (_, named) in enumerate(CAPTIONS.values())
                for axis, member in named.items() if member}
    identity = {(r["set_id"], r["member_id"]) for r in rows if r["identity_member"]}
    assert identity == expected and len(expected) == IDENTITY_MEMBERS
    assert {(r["set_id"], r["member_id"]) for r in rows if r["status"] == "accepted"} == expected
    for row in rows:
        if row["identity_member"]:
            assert row["status"] != "error" and row["directional"] is None
            assert row["score_notes"] == IDENTITY_NOTE
            assert "directional" not in (row["reason"] or "")
            assert row["image_image"] is not None and row["text_image"] is not None  # the other checks apply
        else:  # the image did not move: no direction, below production's 0.2
            assert row["status"] == "rejected" and row["directional"] == 0.0 and row["score_notes"] is None
            assert "directional 0.0000 < 0.2000 (no edit direction" in row["reason"]


def test_identity_is_said_in_the_manifest_and_the_samples(output):
    rows = pq.read_table(output / "manifest").to_pylist()
    assert {r["seed_id"] for r in rows} == {f"id{i}" for i in range(len(CAPTIONS))}
    sets = read_output_sets(output)
    assert len(sets) == IDENTITY_MEMBERS and sum(len(s["members"]) for s in sets.values()) == IDENTITY_MEMBERS
    for sample in sets.values():
        for member in sample["members"].values():
            meta = member["meta"]
            named = list(CAPTIONS.values())[int(meta["seed_id"][2:])][1]
            assert meta["identity_member"] == (named[meta["axis"]] == meta["member_id"])
            assert (meta["score_notes"] == IDENTITY_NOTE) == meta["identity_member"]


def test_webdataset_reads_the_identity_members_as_the_samples(output):
    """A user's reader: plain webdataset over the member shards sees the 7 identity members."""
    samples = [s for tar in sorted((output / "shards").glob("*.tar"))
               for s in wds.WebDataset(str(tar), shardshuffle=False)]
    assert len(samples) == IDENTITY_MEMBERS
    named = {(f"id{i}", axis, member) for i, (_, by_axis) in enumerate(CAPTIONS.values())
             for axis, member in by_axis.items() if member}
    metas = [json.loads(s["json"]) for s in samples]
    assert {(m["seed_id"], m["axis"], m["member_id"]) for m in metas} == named
    assert all(m["identity_member"] for m in metas)
