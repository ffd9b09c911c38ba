import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

from schemas.records import SET, rows_to_table
from stages.encode import SampleEncoder
from pipeline.output.shard_writer import ShardWriter
from stages.encode import ShardConfig
from pipeline.output.storage import Storage
from tests.helpers import MINI_SEEDS, WRITER_PROVENANCE, injected_faults, set_row, write_sets


def photo_set(index: int, status: str) -> dict:
    """A set whose seed and members are a 256 px photo, as the filter hands it on."""
    photo = Image.open(MINI_SEEDS / "chef" / "seed0.png").convert("RGB").resize((256, 256))
    row = set_row(index, status, images={"male": photo, "female": photo.transpose(Image.FLIP_LEFT_RIGHT)})
    row.update(image_rgb=photo.tobytes(), width=256, height=256)
    return row


def test_encoded_rows_carry_jpegs_and_thumbnails_instead_of_raw_images():
    batch = rows_to_table([photo_set(0, "accepted"), photo_set(1, "rejected")], SET)
    out = SampleEncoder(ShardConfig(prefix="t", thumbnail_size=64), WRITER_PROVENANCE)(batch)
    assert out.schema == SET
    assert out.nbytes < batch.nbytes / 10  # what crosses to the driver
    accepted, rejected = out.to_pylist()
    assert Image.open(io.BytesIO(accepted["src_jpeg"])).size == (256, 256)
    assert accepted["set_json"].startswith(b"{")
    for row in (accepted, rejected):
        assert row["image_rgb"] is None and Image.open(io.BytesIO(row["src_thumb"])).size == (64, 64)
        for cand in row["candidates"]:
            assert cand["image_rgb"] is None and Image.open(io.BytesIO(cand["thumb"])).size == (64, 64)
            chosen = row is accepted and cand["status"] == "accepted"
            assert (cand["jpeg"] is not None) == chosen  # only files that go in the tar are encoded
            assert (cand["member_json"] is not None) == chosen
    assert rejected["src_jpeg"] is None and rejected["set_json"] is None


def test_a_set_that_fails_to_encode_is_recorded_as_an_error_and_the_others_are_written(tmp_path):
    with injected_faults("encode:0"):
        result = write_sets(tmp_path, [set_row(0, "accepted"), set_row(1, "accepted")])
    assert result.samples == 2  # the other set's two members
    manifest = pq.read_table(tmp_path / "manifest" / result.manifest_name).to_pylist()
    failed = [r for r in manifest if r["seed_index"] == 0]
    assert len(failed) == 4 and all(r["status"] == "error" and r["set_status"] == "error" for r in failed)
    assert all(r["reason"].startswith("encode: ") and r["shard"] is None for r in failed)
    assert {r["status"] for r in manifest if r["seed_index"] == 1} == {"accepted", "rejected"}


def test_the_writer_refuses_accepted_sets_that_skipped_the_encode_stage(tmp_path):
    writer = ShardWriter(ShardConfig(prefix="t"), Storage(str(tmp_path)), WRITER_PROVENANCE)
    writer.setup()
    with pytest.raises(ValueError, match="s0-gender is accepted but was not encoded.*SampleEncoder"):
        writer.write_shard(0, [set_row(0, "accepted")])
    assert not list((tmp_path / "shards").iterdir())
