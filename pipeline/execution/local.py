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


@dataclass
class LocalRun:
    table: pa.Table  # the last stage's output
    stages: dict[str, Stage] = field(default_factory=dict)  # by name, with their counters
    timings: dict[str, dict] = field(default_factory=dict)  # per stage: set-up and run seconds, rows/s


def run_stages(loaded: LoadedConfig, stop_before: str | None = None, limit: int | None = None) -> LocalRun:
    """Run ``loaded``'s stages on its listed seeds, up to (not including) the stage ``stop_before``."""
    config = with_models_resolved(loaded.config)
    result = LocalRun(list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts))
    for spec in stage_specs(config, loaded.taxonomy, provenance(loaded)):
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
    stats.json. No resume, lock, run.json or report, and no dedupe pre-pass: a repeated image is edited and
    then recorded as a duplicate, as ``run`` does with ``input.dedupe: false``. For tests and for debugging
    a backend on one machine."""
    import itertools

    from pipeline.execution.run import mark_repeated_seed
    from pipeline.output.run_record import json_bytes
    from pipeline.output.shard_writer import ShardWriter
    from pipeline.output.stats import collect
    from pipeline.output.storage import Storage
    from schemas.layout import SIZES_FILE, STATS_FILE

    result = run_stages(loaded, limit=limit)
    storage = Storage(output)
    writer = ShardWriter(loaded.config.shards, storage, provenance(loaded))
    writer.setup()
    first_seen: dict[str, int] = {}
    for index, rows in itertools.groupby(result.table.to_pylist(), key=lambda r: r["shard_index"]):
        rows = list(rows)
        for row in rows:
            mark_repeated_seed(row, first_seen)
        writer.write_shard(index, rows)
    stats, sizes = collect(storage)
    work = {name: dict(sorted(stage.counters.items())) for name, stage in result.stages.items()}
    storage.write_atomic(json_bytes(sizes), SIZES_FILE)
    storage.write_atomic(json_bytes({**stats, "stage_work": work}), STATS_FILE)
    return result
