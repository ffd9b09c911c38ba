"""The one manifest reader (pipeline/output/manifest.py) through the readers users call: older schema versions
read as declared, unknown ones and crafted keys refused in one line, one grouping of sets for the review page
and the report. Outputs are written by the shard writer (no Ray)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.commands.cli import main
from pipeline.output.storage import Storage
from tests.helpers import set_row, write_sets

# The manifest's columns at schema version 2, before caption notes and review existed: `git show
# 1ef1008:schemas/records.py`, written out here by hand.
V2_COLUMNS = ["schema_version", "set_id", "seed_id", "seed_index", "source_uri", "source_member", "axis", "concept",
              "concept_source", "member_id", "attributes", "candidate", "noise_seed", "guidance_scale", "p2p_fraction",
              "status", "reason", "set_status", "seed_status", "caption", "target_caption", "instruction",
              "text_image", "directional", "image_image", "attribute_margin", "nsfw", "shard", "sample_key", "file",
              "captioner", "editor", "clip_model", "config_hash"]


def two_shards(out):
    """Shard 0: sets s0, s1 accepted; shard 1: s2 accepted, s3 rejected (2 members x 2 candidates each)."""
    write_sets(out, [set_row(0, "accepted"), set_row(1, "accepted")], index=0)
    write_sets(out, [set_row(2, "accepted"), set_row(3, "rejected")], index=1)


def rewrite(path, change) -> None:
    """Rewrite a manifest as someone else would: pyarrow, the table changed by ``change``, metadata kept."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def downgrade_to_v2(table: pa.Table) -> pa.Table:
    table = table.select(V2_COLUMNS)
    return table.set_column(0, "schema_version", pa.array([2] * table.num_rows, pa.int32()))


def test_a_manifest_from_before_the_review_columns_reads_like_a_new_one(tmp_path):
    from pipeline.output.stats import collect
    from pipeline.trainers.readers import accepted_members, iter_members, iter_sets

    out = tmp_path / "out"
    two_shards(out)
    rewrite(out / "manifest" / "t-000001.parquet", downgrade_to_v2)
    # by hand: s0, s1 and s2 keep their two members each; s3 was rejected
    keys = sorted(m["key"] for m in iter_members(str(out)))
    assert keys == sorted(f"s{i}-gender-{m}" for i in range(3) for m in ("male", "female"))
    assert [s["set_id"] for s in iter_sets(str(out))] == ["s0-gender", "s1-gender", "s2-gender"]
    table = accepted_members(str(out))
    old = table.filter(pc.equal(table.column("set_id"), "s2-gender")).to_pylist()
    assert [(r["identity_member"], r["review_verdict"], r["caption_note"]) for r in old] == [(False, None, None)] * 2
    stats, sizes = collect(Storage(str(out)))
    assert sizes == {"t-000000.tar": 4, "t-000001.tar": 2} and stats["sets"] == {"accepted": 3, "rejected": 1}


@pytest.mark.parametrize("version,says", [(99, "newer than this counterfactory reads"),
                                          (1, "no longer read")])
def test_an_undeclared_schema_version_is_refused_in_one_line(tmp_path, capsys, version, says):
    out = tmp_path / "out"
    two_shards(out)
    rewrite(out / "manifest" / "t-000000.parquet",
            lambda t: t.set_column(0, "schema_version", pa.array([version] * t.num_rows, pa.int32())))
    code = main(["export", str(out), "--to", "hf", str(tmp_path / "dest")])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and f"schema version {version}" in err and says in err
    assert "manifest/t-000000.parquet" in err and not (tmp_path / "dest").exists()


def _set_value(column: str, value):
    def change(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        row = next(r for r in rows if r["shard"] is not None)
        row[column] = value
        return pa.Table.from_pylist(rows, schema=table.schema)
    return change


@pytest.mark.parametrize("column,value", [
    ("sample_key", "/tmp/pwn"),                 # an absolute path: pathlib drops the images/ folder before it
    ("file", "../../pwn.jpg"),
    ("shard", "../../../etc/t-000000.tar"),     # a tar outside shards/
    ("shard", "t-000001.tar"),                  # another shard's tar
    ("set_id", "S0 GENDER"),
    ("member_id", "male\n"),
    ("sample_key", "s1-gender-female"),         # a key, but not this row's member
])
def test_every_reader_refuses_a_manifest_whose_keys_are_crafted(tmp_path, column, value):
    from pipeline.output.manifest import ManifestError
    from pipeline.output.stats import collect
    from pipeline.report.contents import OutputContents
    from pipeline.review.catalog import Catalog
    from pipeline.trainers.readers import iter_members, iter_sets

    out = tmp_path / "out"
    two_shards(out)
    rewrite(out / "manifest" / "t-000000.parquet", _set_value(column, value))
    readers = {
        "iter_members": lambda: list(iter_members(str(out))),
        "iter_sets": lambda: list(iter_sets(str(out))),
        "review page": lambda: Catalog(Storage(str(out))),
        "report": lambda: OutputContents.load(Storage(str(out))),
        "stats": lambda: collect(Storage(str(out))),
    }
    for what, read in readers.items():
        with pytest.raises(ManifestError) as refused:
            read()
        message = str(refused.value)
        assert "manifest/t-000000.parquet" in message and column in message and "\n" not in message, what


def _duplicate_first(table: pa.Table) -> pa.Table:
    """Shard 0 as a run writes it when seed 1 is a copy of seed 0, the copy's error rows put first in the file
    (nothing orders rows within a file for a reader)."""
    rows = table.to_pylist()
    copy = [dict(r, seed_index=1, seed_status="error", set_status="error", status="error", shard=None,
                 sample_key=None, file=None, reason="duplicate of seed 0") for r in rows if r["seed_index"] == 0]
    kept = [r for r in rows if r["seed_index"] == 0]
    return pa.Table.from_pylist(copy + kept, schema=table.schema)


def test_the_review_page_and_the_report_group_a_copy_of_a_seed_the_same_way(tmp_path):
    from pipeline.report.contents import OutputContents
    from pipeline.review.catalog import Catalog

    out = tmp_path / "out"
    write_sets(out, [set_row(0, "accepted"), set_row(1, "accepted")], index=0)
    rewrite(out / "manifest" / "t-000000.parquet", _duplicate_first)
    catalog = Catalog(Storage(str(out)))
    # one set s0-gender: the one seed 0 made (accepted, both members in the shard), not the copy's error rows
    assert [(s["set_id"], s["seed_index"], s["status"]) for s in catalog.summaries()] == [("s0-gender", 0, "accepted")]
    assert {m["member_id"]: m["in_shards"] for m in catalog.detail("s0-gender")["members"]} == {
        "male": True, "female": True}
    # the report keeps both seeds' entries, by (seed_index, set_id)
    sets = OutputContents.load(Storage(str(out))).sets()
    assert [(s["seed_index"], s["set_id"], s["set_status"], len(s["candidates"])) for s in sets] == [
        (0, "s0-gender", "accepted", 4), (1, "s0-gender", "error", 4)]
