"""Rows in any order, copies read before their originals: the same bytes as an ordered run (no Ray: the stages
run in this process, the registry is the plain class)."""

from __future__ import annotations

import shutil

import pytest

from pipeline.config.loading import load_config
from pipeline.config.model_refs import with_models_resolved
from pipeline.execution.assembler import ShardAssembler
from pipeline.execution.provenance import provenance
from pipeline.execution.run import copy_rows_maker
from pipeline.execution.seen_registry import SeenRegistry
from pipeline.execution.stage_list import stage_specs
from pipeline.output.shard_writer import ShardWriter
from pipeline.output.storage import Storage
from stages.ingest.listing import list_seeds
from tests.conftest import REPO


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """The mini seeds and a copy of the first chef photo that lists after it."""
    root = tmp_path_factory.mktemp("seeds") / "seeds"
    shutil.copytree(REPO / "configs" / "mini_seeds", root)
    shutil.copy(root / "chef" / "seed0.png", root / "chef" / "seed9_copy.png")
    return root


def assemble(loaded, out, reverse: bool) -> int:
    """Ingest the seeds (reversed: every copy is read before its original), run the stages, hand the rows to the
    assembler (reversed: last seed first) and write the shards."""
    config = with_models_resolved(loaded.config)
    refs = list_seeds(config.input, config.shards.seeds_per_shard, None, loaded.concepts)
    indices = refs.column("seed_index").to_pylist()
    registry = SeenRegistry(indices, {}, {})
    table = refs.take(list(reversed(range(refs.num_rows)))) if reverse else refs
    for spec in stage_specs(config, loaded.taxonomy, provenance(loaded), registry.claim):
        stage = spec.factory()
        stage.start()
        table = stage(table)
    rows = sorted(table.to_pylist(), key=lambda r: (r["seed_index"], r["set_id"]), reverse=reverse)
    writer = ShardWriter(config.shards, Storage(str(out)), provenance(loaded))
    writer.setup()
    late_copies = []
    make_copy = copy_rows_maker(refs, loaded)

    def copy_rows(*args):
        late_copies.append(args)
        return make_copy(*args)

    assembler = ShardAssembler(dict(zip(indices, refs.column("shard_index").to_pylist())), len(config.plan.axes),
                               registry, writer.write_shard, copy_rows)
    for row in rows:
        assembler.add(row)
        assembler.flush()
    assembler.flush(final=True)
    return len(late_copies)


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dedupe", [True, False])
def test_arrival_order_changes_no_byte(tiny, seeds, tmp_path, dedupe):
    loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(seeds), "input.dedupe": dedupe,
                                                          "shards.seeds_per_shard": 3})
    assert assemble(loaded, tmp_path / "ordered", reverse=False) == 0
    assert assemble(loaded, tmp_path / "reversed", reverse=True) == (1 if dedupe else 0)  # the copy got through
    ordered, shuffled = files(tmp_path / "ordered"), files(tmp_path / "reversed")
    assert len(ordered) == 12 and ordered == shuffled  # 3 shards x (shard, set tar, manifest, thumbnails)

    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "reversed" / "manifest").to_pylist()
    copy = [r for r in rows if r["source_uri"].endswith("seed9_copy.png")]
    expected = "ingest: duplicate: same image as seed_index" if dedupe else "duplicate: same image as seed_index"
    assert copy and all(r["status"] == "error" and r["reason"].startswith(expected) for r in copy)
