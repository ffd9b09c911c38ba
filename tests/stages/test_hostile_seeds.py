"""A corpus of hostile inputs: each one ends as a normalised seed or an error row with the reason written out
for it by hand (tests.hostile_inputs), and nothing is read that should not be."""

import os
import threading

import numpy as np
import pytest

from stages.ingest.config import IngestConfig
from stages.ingest.decode import DecodeSeeds
from stages.ingest.listing import list_seeds
from tests.hostile_inputs import HOSTILE_FOLDER, write_hostile_folder, write_hostile_tar

# header_big.png is over Pillow's limit: Pillow warns, as it should, and ingest refuses it (over max_pixels)
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture
def corpus(tmp_path):
    return write_hostile_folder(tmp_path)


def decode_in_time(config: IngestConfig, seconds: float = 60) -> list[dict]:
    """Listing and decoding, in a thread that must end: a FIFO opened for reading would block it for ever."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        rows=DecodeSeeds(config)(list_seeds(config, seeds_per_shard=100)).to_pylist()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "decoding blocked (a FIFO was opened?)"
    return result["rows"]


def test_every_hostile_input_is_a_seed_or_an_error_row_with_its_reason(corpus):
    config = IngestConfig(path=str(corpus), min_side=8, max_pixels=500 * 500)
    rows = decode_in_time(config)
    assert len(rows) == len(os.listdir(os.fsencode(corpus))) == len(HOSTILE_FOLDER) == 24  # nothing vanished
    by_name = {os.path.basename(r["source_uri"]): r for r in rows}
    assert sorted(by_name) == sorted(HOSTILE_FOLDER)
    for name, reason in HOSTILE_FOLDER.items():
        row = by_name[name]
        if reason is None:
            assert row["status"] == "ok", (name, row["error"])
            assert len(row["image_rgb"]) == row["width"] * row["height"] * 3  # normalised to 8-bit RGB
        else:
            assert row["status"] == "error" and reason in row["error"], (name, row["error"])
            assert row["image_rgb"] is None and row["seed_id"].startswith("e")
    assert by_name["copy_a.png"]["seed_id"] == by_name["copy_b.png"]["seed_id"]  # duplicates share the content key
    assert by_name["latin1-\\xe9t\\xe9.png"]["source_uri"].encode("utf-8")  # stored as valid UTF-8 text
    assert all(len(r["seed_id"]) <= 21 and "." not in r["seed_id"] for r in rows)


def test_the_byte_limit_is_the_config_s(corpus):
    """The sparse 60 MB file: over a 50 MB limit, read (and found to be no image) under a 70 MB one."""
    config = IngestConfig(path=str(corpus), min_side=8, max_pixels=500 * 500, max_bytes=70_000_000)
    (huge,) = [r for r in decode_in_time(config) if r["source_uri"].endswith("huge.jpg")]
    assert huge["status"] == "error" and "not a decodable image" in huge["error"]


def test_every_entry_of_a_hostile_tar_is_a_row_with_its_reason(tmp_path):
    expected = write_hostile_tar(tmp_path / "seeds-000000.tar")
    config = IngestConfig(kind="webdataset", path=str(tmp_path / "seeds-000000.tar"), min_side=8, max_bytes=20_000)
    rows = decode_in_time(config)
    assert [r["source_member"] for r in rows] == [member for member, _ in expected]
    for row, (member, reason) in zip(rows, expected):
        if reason is None:
            assert row["status"] == "ok", (member, row["error"])
        else:
            assert row["status"] == "error" and reason in row["error"], (member, row["error"])
    assert rows[0]["caption"] == "a man at a desk"
    first_pixel = np.frombuffer(rows[0]["image_rgb"][:3], np.uint8).astype(int)
    assert np.abs(first_pixel - (20, 120, 40)).max() <= 8  # the first a001.jpg, not the second (200, 0, 0)
