"""The local executor: every stage of a run in turn, in this process, each built and started once as its
actor would be, then called on all the seeds at once. No Ray: for tests, benchmarks and debugging a stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import with_models_resolved
from pipeline.execution.provenance import provenance
from pipeline.execution.stage_list import stage_specs
from stages.base import Stage
from stages.ingest.listing import list_seeds
from stages.ingest.versions import with_source_versions


@dataclass
class LocalRun:
    table: pa.Table  # the last stage's output
    stages: dict[str, Stage] = field(default_factory=dict)  # by name, with their counters
    timings: dict[str, dict] = field(default_factory=dict)  # per stage: set-up and run seconds, rows/s


def run_stages(loaded: LoadedConfig, stop_before: str | None = None, limit: int | None = None,
               seed_refs: pa.Table | None = None, claim=None) -> LocalRun:
    """Run ``loaded``'s stages on its listed seeds (or ``seed_refs``), up to (not including) the stage
    ``stop_before``; ``claim``: the dedupe registry's (SeenRegistry.claim), as the Ray executor's ingest has."""
    config = with_models_resolved(loaded.config)
    if seed_refs is None:
        seed_refs = list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts)
    result = LocalRun(seed_refs)
    for spec in stage_specs(config, loaded.taxonomy, provenance(loaded), claim):
        if spec.name == stop_before:
            break
        stage = result.stages[spec.name] = spec.factory()
        started = time.perf_counter()
        stage.start()
        setup = time.perf_counter() - started
        rows_in = result.table.num_rows
        started = time.perf_counter()
        result.table = stage(result.table)
        seconds = time.perf_counter() - started
        result.timings[spec.name] = {"setup_s": round(setup, 3), "run_s": round(seconds, 3), "rows_in": rows_in,
                                     "rows_per_s": round(rows_in / seconds, 2) if seconds else None}
    return result


def run_local(loaded: LoadedConfig, output: str, limit: int | None = None) -> LocalRun:
    """A whole run in this process, without Ray: the stages, then the shard writer, then sizes.json and
    stats.json. No resume, lock, run.json or report. Dedupe is the Ray executor's, the same code: ingest claims
    each seed in the run's SeenRegistry, and the ShardAssembler settles copies and repeated seed ids before
    each shard is written. For tests and for debugging a backend on one machine."""
    from pipeline.execution.assembler import ShardAssembler
    from pipeline.execution.seen_registry import SeenRegistry, copy_rows_maker
    from pipeline.output.run_record import json_bytes
    from pipeline.output.shard_writer import ShardWriter
    from pipeline.output.stats import collect
    from pipeline.output.storage import Storage
    from schemas.layout import SIZES_FILE, STATS_FILE

    config = loaded.config
    refs = with_source_versions(list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts),
                                config.input)
    seeds, shards = refs.column("seed_index").to_numpy(), refs.column("shard_index").to_numpy()
    registry = SeenRegistry(seeds, {}, {})
    result = run_stages(loaded, seed_refs=refs, claim=registry.claim)
    storage = Storage(output)
    writer = ShardWriter(config.shards, storage, provenance(loaded))
    writer.setup()
    assembler = ShardAssembler(seeds, shards, len(config.plan.axes), registry, writer.write_shard,
                               copy_rows_maker(refs, loaded))
    for row in result.table.to_pylist():
        assembler.add(row)
    assembler.flush(final=True)
    stats, sizes = collect(storage)
    work = {name: dict(sorted(stage.counters.items())) for name, stage in result.stages.items()}
    storage.write_atomic(json_bytes(sizes), SIZES_FILE)
    storage.write_atomic(json_bytes({**stats, "stage_work": work}), STATS_FILE)
    return result
