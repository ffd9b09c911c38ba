"""A corpus of hostile inputs: each one ends as a normalised seed or an error row with its reason."""

import os

import pytest

from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from tests.helpers import HOSTILE_FOLDER_ERRORS as EXPECTED_ERRORS, write_hostile_folder


@pytest.fixture
def corpus(tmp_path):
    return write_hostile_folder(tmp_path)


def test_every_hostile_input_is_a_seed_or_an_error_row_with_its_reason(corpus):
    config = IngestConfig(path=str(corpus), min_side=8, max_pixels=500 * 500)
    refs = list_seeds(config, seeds_per_shard=100)
    entries = os.listdir(os.fsencode(corpus))
    assert refs.num_rows == len(entries) == 16  # nothing vanished, not even the folder or the symlink
    rows = DecodeSeeds(config)(refs).to_pylist()
    by_name = {os.path.basename(r["source_uri"]): r for r in rows}
    for name, reason in EXPECTED_ERRORS.items():
        assert by_name[name]["status"] == "error" and reason in by_name[name]["error"], (name, by_name[name]["error"])
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) + len(EXPECTED_ERRORS) == len(rows)
    for row in ok:
        assert len(row["image_rgb"]) == row["width"] * row["height"] * 3  # normalised to 8-bit RGB
    assert by_name["copy_a.png"]["seed_id"] == by_name["copy_b.png"]["seed_id"]  # duplicates share the content key
    latin1 = by_name["latin1-\\xe9t\\xe9.png"]
    assert latin1["status"] == "ok" and latin1["source_uri"].encode("utf-8")  # stored as valid UTF-8 text
    assert by_name["x" * 240 + ".png"]["status"] == "ok"
    assert all(len(r["seed_id"]) <= 21 and "." not in r["seed_id"] for r in rows)
