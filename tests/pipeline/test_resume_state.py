"""What a resume finds in an output, on real files without a pipeline run: an input changed under finished shards
is refused, shards beyond a shrunk listing are refused and verify names them, a folder that is not an output is
never written into, and the dedupe registry restarts from the completed shards' content ids."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.commands import cli
from pipeline.config.loading import load_config
from pipeline.execution.seen_registry import SeenRegistry
from pipeline.output.state import OutputRefused, completed_shards, refuse_shards_beyond, seen_in_completed
from pipeline.output.storage import Storage
from pipeline.output.verify import verify_output
from stages.encode import ShardConfig
from stages.ingest.config import IngestConfig
from stages.ingest.listing import list_seeds
from stages.ingest.versions import with_source_versions
from tests.conftest import REPO
from tests.helpers import png_bytes, set_row, write_sets

CONFIG = ShardConfig(prefix="t")


def write_tar(path, members: dict[str, bytes], mtime_ns: int) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def listing(tar) -> pa.Table:
    return with_source_versions(list_seeds(IngestConfig(kind="webdataset", path=str(tar)), 1), IngestConfig())


def write_output(out, refs: pa.Table, content_ids: list[str | None] | None = None) -> None:
    """A finished shard per listed seed, each row saying where its seed came from as the run records it."""
    for i, ref in enumerate(refs.to_pylist()):
        row = set_row(ref["seed_index"], "accepted")
        row.update({k: ref[k] for k in ("shard_index", "source_uri", "source_member", "source_offset", "source_size",
                                        "source_version")})
        row["content_id"] = content_ids[i] if content_ids else None
        write_sets(out, [row], ref["shard_index"], CONFIG)


A, B = png_bytes(32, 32, (10, 20, 30)), png_bytes(32, 32, (200, 20, 30))


def test_a_tar_replaced_under_finished_shards_is_refused_naming_the_fix(tmp_path):
    tar = tmp_path / "seeds.tar"
    write_tar(tar, {"a.png": A, "b.png": B}, 1_000_000_000)
    refs = listing(tar)
    assert refs.column("source_version").to_pylist() == [f"mtime_ns=1000000000 size={tar.stat().st_size}"] * 2
    storage = Storage(str(tmp_path / "out"))
    write_output(tmp_path / "out", refs)
    assert completed_shards(storage, refs, "t") == {0, 1}

    # re-uploaded with the same names and sizes, other bytes: only the file's version tells
    write_tar(tar, {"a.png": A, "b.png": B[:-1] + b"\0"}, 2_000_000_000)
    with pytest.raises(OutputRefused, match=r"the input changed since 2 finished shard\(s\) were written .*"
                                            r"source_version was mtime_ns=1000000000 .* now mtime_ns=2000000000.*"
                                            r"delete manifest/t-000000.parquet manifest/t-000001.parquet to redo"):
        completed_shards(storage, listing(tar), "t")

    # another member order: the same seed indices and tar now point at other offsets
    write_tar(tar, {"b.png": B, "a.png": A}, 1_000_000_000)
    with pytest.raises(OutputRefused, match="source_member was a.png, now b.png"):
        completed_shards(storage, listing(tar), "t")


def test_manifests_older_than_schema_4_are_resumed_on_what_they_recorded(tmp_path):
    tar = tmp_path / "seeds.tar"
    write_tar(tar, {"a.png": A, "b.png": B}, 1_000_000_000)
    refs = listing(tar)
    write_output(tmp_path / "out", refs)
    for path in (tmp_path / "out" / "manifest").glob("*.parquet"):  # as an older version wrote them
        table = pq.read_table(path)
        table = table.drop(["source_offset", "source_size", "source_version", "content_id"])
        version = table.schema.get_field_index("schema_version")
        pq.write_table(table.set_column(version, "schema_version", pa.array([3] * table.num_rows,
                                                                            table.schema.field(version).type)), path)
    write_tar(tar, {"a.png": A, "b.png": B}, 2_000_000_000)  # touched: an older manifest cannot tell
    assert completed_shards(Storage(str(tmp_path / "out")), listing(tar), "t") == {0, 1}


def test_a_replaced_object_on_s3_gets_another_version(s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="versions")
    s3.put_object(Bucket="versions", Key="seeds/a.png", Body=A)
    config = IngestConfig(kind="folder", path="s3://versions/seeds")
    before = with_source_versions(list_seeds(config, 1), config).column("source_version").to_pylist()
    s3.put_object(Bucket="versions", Key="seeds/a.png", Body=B)
    after = with_source_versions(list_seeds(config, 1), config).column("source_version").to_pylist()
    etag = s3.head_object(Bucket="versions", Key="seeds/a.png")["ETag"].strip('"')
    assert before[0].startswith("ETag=") and after == [f"ETag={etag}"] and before != after


def test_shards_beyond_a_shrunk_listing_are_refused_and_verify_names_them(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for i in range(3):
        (seeds / f"{i}.png").write_bytes(png_bytes(32, 32, (i, 2, 3)))
    config = IngestConfig(kind="folder", path=str(seeds))
    out = tmp_path / "out"
    write_output(out, list_seeds(config, 1))
    (seeds / "2.png").unlink()
    with pytest.raises(OutputRefused, match=r"holds 1 shard\(s\) beyond the 2 this listing makes \(t-000002.tar\)"):
        refuse_shards_beyond(Storage(str(out)), list_seeds(config, 1), "t")

    (out / "sizes.json").write_text(json.dumps({f"t-00000{i}.tar": 2 for i in range(3)}))
    (out / "run.json").write_text(json.dumps({"status": "complete", "listing": {"seeds": 2, "shards": 2}}))
    problems, _ = verify_output(str(out))
    assert problems == ["shard(s) [2] are beyond the 2 the run listed (run.json: listing): left from a larger input; "
                        "delete them"]


def run_cli(out, *extra) -> int:
    args = ["run", str(REPO / "configs" / "mini.yaml"), "--output", str(out), "--no-report",
            "--set", f"input.path={REPO / 'configs' / 'mini_seeds'}", *extra]
    return cli.main(args)


def test_a_run_into_a_folder_that_is_not_an_output_is_refused_and_touches_nothing(tiny_cache, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"README.md": b"my notes", "stats.json": b"{}", "preview.html": b"<p>", ".tmp-draft": b"keep me"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    assert run_cli(out) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"output refused: {out} is not empty (4 entries") and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == mine


def test_a_shrunk_input_is_refused_before_run_json_changes(tiny_cache, tmp_path, capsys):
    loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(REPO / "configs" / "mini_seeds")})
    out = tmp_path / "out"
    for index in (0, 2):  # the 7 mini seeds make two shards of 4; a larger input left a third
        write_sets(out, [set_row(0, "accepted")], index, ShardConfig(prefix="mini"))
    record = json.dumps({"status": "complete", "config_hash": loaded.config_hash}).encode()
    (out / "run.json").write_bytes(record)
    assert run_cli(out) == 3
    assert "holds 1 shard(s) beyond the 2 this listing makes (mini-000002.tar)" in capsys.readouterr().err
    assert (out / "run.json").read_bytes() == record and not (out / "run.lock").exists()


def test_dedupe_survives_a_resume_when_the_source_names_its_seeds(tmp_path):
    """A parquet list giving seed ids: a copy (seed 2) in a later shard of an image in a completed shard (seed 0)
    is still a copy after a resume, as in an uninterrupted run; the registry restarts from content ids."""
    out = tmp_path / "out"
    rows = [{"seed_index": i, "shard_index": i, "source_uri": f"{i}.png", "seed_id": f"given{i}",
             "content_id": c} for i, c in enumerate(["c-a", "c-b"])]
    for row in rows:
        written = set_row(row["seed_index"], "accepted")
        written.update(row)
        write_sets(out, [written], row["shard_index"], CONFIG)
    contents, seed_ids = seen_in_completed(Storage(str(out)), {0, 1}, "t")
    assert (contents, seed_ids) == ({"c-a": 0, "c-b": 1}, {"given0": 0, "given1": 1})
    registry = SeenRegistry([2], contents, seed_ids)
    assert registry.claim([(2, "c-a", "given2")]) == [0]  # seed 2 holds seed 0's bytes: a copy of seed 0
    assert registry.decide([(2, "c-a", "given2")]) == [(0, None, [])]
