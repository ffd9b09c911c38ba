"""Rows in any order, copies read before their originals: the same bytes as an ordered run (no Ray: the stages
run in this process, the registry is the plain class)."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.config.loading import load_config
from pipeline.config.model_refs import with_models_resolved
from pipeline.execution.assembler import ShardAssembler
from pipeline.execution.provenance import provenance
from pipeline.execution.seen_registry import copy_rows_maker
from pipeline.execution.seen_registry import SeenRegistry
from pipeline.execution.stage_list import stage_specs
from pipeline.output.shard_writer import ShardWriter
from pipeline.output.storage import Storage
from stages.ingest.listing import list_seeds
from tests.conftest import REPO
from tests.helpers import injected_faults


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """The mini seeds, two copies of the first chef photo and a copy of the undecodable one, listed after them."""
    root = tmp_path_factory.mktemp("seeds") / "seeds"
    shutil.copytree(REPO / "configs" / "mini_seeds", root)
    shutil.copy(root / "chef" / "seed0.png", root / "chef" / "seed9_copy.png")
    shutil.copy(root / "chef" / "seed0.png", root / "chef" / "seed9_copy2.png")
    shutil.copy(root / "broken.jpg", root / "broken_copy.jpg")
    return root


def assemble(loaded, out, order: str) -> int:
    """Ingest the seeds in ``order`` (ordered; reversed: every copy read before its original; copies_first),
    run the stages, hand the rows to the assembler in reverse unless ordered, and write the shards. Returns
    how many copies the writer had to rebuild."""
    config = with_models_resolved(loaded.config)
    refs = list_seeds(config.input, config.shards.seeds_per_shard, None, loaded.concepts)
    indices = refs.column("seed_index").to_pylist()
    uris = refs.column("source_uri").to_pylist()
    registry = SeenRegistry(indices, {}, {})
    take = {"ordered": indices, "reversed": indices[::-1],
            "copies_first": sorted(indices, key=lambda i: ("copy" not in uris[i], i))}[order]
    table = refs.take(take)
    for spec in stage_specs(config, loaded.taxonomy, provenance(loaded), registry.claim):
        stage = spec.factory()
        stage.start()
        table = stage(table)
    rows = sorted(table.to_pylist(), key=lambda r: (r["seed_index"], r["set_id"]), reverse=order != "ordered")
    writer = ShardWriter(config.shards, Storage(str(out)), provenance(loaded))
    writer.setup()
    rebuilt, make_copy = [], copy_rows_maker(refs, loaded)

    def copy_rows(*args):
        rebuilt.append(args)
        return make_copy(*args)

    assembler = ShardAssembler(indices, refs.column("shard_index").to_pylist(), len(config.plan.axes), registry,
                               writer.write_shard, copy_rows)
    for row in rows:
        assembler.add(row)
        assembler.flush()
    assembler.flush(final=True)
    return len(rebuilt)


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ordered(tiny, seeds, tmp_path_factory):
    """The ordered run's files, per dedupe setting, made once."""
    made = {}

    def get(dedupe: bool):
        if dedupe not in made:
            out = tmp_path_factory.mktemp("ordered") / "out"
            assert assemble(_loaded(seeds, dedupe), out, "ordered") == (3 if dedupe else 0)  # caught at ingest
            made[dedupe] = files(out)
        return made[dedupe]
    return get


def _loaded(seeds, dedupe: bool):
    # Small edits (the assembler is on trial, not the models); both axes, so a seed has several sets to wait for.
    return load_config(REPO / "configs" / "mini.yaml", {"input.path": str(seeds), "input.dedupe": dedupe,
                                                        "shards.seeds_per_shard": 3, "plan.candidates_per_set": 1,
                                                        "edit.steps": 2, "edit.resolution": 32})


@pytest.mark.parametrize("dedupe, order, fault", [
    (True, "reversed", None),  # every copy read before its original
    (True, "copies_first", "caption:6"),  # a copy names a copy; the first copy fails in a later stage too
    (False, "reversed", None),  # no dedupe: the repeated seed id settles it, also by seed index
])
def test_arrival_order_changes_no_byte(ordered, seeds, tmp_path, dedupe, order, fault):
    loaded = _loaded(seeds, dedupe)
    with injected_faults(fault or ""):
        rebuilt = assemble(loaded, tmp_path / "out", order)
    assert rebuilt == (3 if dedupe else 0)
    got = files(tmp_path / "out")
    assert len(got) == 16 and got == ordered(dedupe)  # 4 shards x (shard, set tar, manifest, thumbnails)

    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    copies = [r for r in rows if "copy" in r["source_uri"]]
    expected = "ingest: duplicate: same image as seed_index" if dedupe else "duplicate: same image as seed_index"
    assert copies and all(r["status"] == "error" and r["reason"].startswith(expected) for r in copies
                          if not r["source_uri"].endswith("broken_copy.jpg") or dedupe)


def test_the_watermark_passes_a_seed_only_once_every_lower_seed_is_ingested():
    """What lets the writer write a shard: every lower seed in. A resumed run's todo skips completed shards, and a
    retried batch claims its seeds again."""
    registry = SeenRegistry([0, 1, 2, 5, 6, 7], {}, {})
    assert registry.watermark() == 0
    registry.claim([(2, "c2", "s2"), (6, "c6", "s6")])  # out of order: 0 and 1 are still out
    assert registry.watermark() == 0
    registry.claim([(0, "c0", "s0"), (1, "c2", "s1")])  # 1 is a copy of 2, claimed after it
    assert registry.watermark() == 5
    registry.claim([(1, "c2", "s1")])  # the batch retried: nothing moves back
    assert registry.watermark() == 5 and registry.ingested == {6}
    registry.claim([(5, "c5", "s5"), (7, "c7", "s7")])
    assert registry.watermark() is None
    assert registry.decide([(2, "c2", "s2"), (1, "c2", "s1")]) == [(1, None, []), (None, None, [])]

