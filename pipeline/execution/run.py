"""Run a config end to end: list seeds, skip completed shards, run the Ray Data graph, write shards,
then the run files (sizes, stats, run record, data card) from what the output holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import check_model_refs, with_models_resolved
from pipeline.execution.driver_heap import HeapTrimmer
from pipeline.execution.progress import Progress
from pipeline.execution.provenance import provenance
from pipeline.execution.ray_seams import check_ray_seams
from pipeline.execution.assembler import ShardAssembler
from pipeline.execution.ray_executor import build_dataset, init_ray, read_work, start_registry
from pipeline.execution.ray_output import batches_as_done
from pipeline.execution.seen_registry import copy_rows_maker
from pipeline.output.run_record import json_bytes, run_record
from pipeline.output.shard_writer import ShardResult, ShardWriter
from pipeline.output.state import (OutputLock, check_config_hash, completed_shards, refuse_shards_beyond,
                                   remove_temporaries, seen_in_completed)
from pipeline.output.stats import collect
from pipeline.output.storage import Storage
from pipeline.report.build import write_report
from schemas.layout import RUN_FILE, SIZES_FILE, STATS_FILE
from stages.ingest.listing import list_seeds
from stages.ingest.versions import with_source_versions


@dataclass
class RunSummary:
    output: str
    shards: list[ShardResult] = field(default_factory=list)  # written by this run
    skipped_shards: list[int] = field(default_factory=list)  # already complete, left untouched
    stats: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)  # stage -> counters of the work this run did
    seconds: float = 0.0


def _process(dataset, assembler: ShardAssembler, progress: Progress) -> None:
    """Consume the graph's rows as they come; the assembler writes each shard once it is settled. On an error
    (a full disk) the graph is stopped at once, its actors with it, not whenever the iterator is collected."""
    batches = iter(batches_as_done(dataset))
    heap = HeapTrimmer()
    try:
        for batch in batches:
            for row in batch.to_pylist():
                assembler.add(row)
                progress.row(row)
            assembler.flush()
            heap.tick()
    finally:
        try:
            getattr(batches, "close", lambda: None)()
        except Exception:  # noqa: BLE001 - the error that stopped the run is the one to report
            pass
    assembler.flush(final=True)


def run_pipeline(
    loaded: LoadedConfig,
    output: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    report: bool | None = None,
    progress_stream=None,
) -> RunSummary:
    """Run, or resume into an output made with the same config; refuse another config's output."""
    started = time.time()
    config = loaded.config
    check_ray_seams()  # before the output is touched: a Ray without them is refused, not run degraded
    check_model_refs(config, loaded.path)
    storage = Storage(output or config.run.output)
    summary = RunSummary(output=storage.uri)
    # Listed before the output is touched: an input that cannot be reached leaves no output behind.
    seed_refs = list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts)
    seed_refs = with_source_versions(seed_refs, config.input)  # each file's version, which a resume checks
    listing = {"seeds": seed_refs.num_rows, "shards": len(set(seed_refs.column("shard_index").to_pylist()))}
    lock = OutputLock(storage)
    lock.acquire()
    try:
        resuming = check_config_hash(storage, loaded.config_hash)
        if resuming:  # refused before run.json changes: a refused run leaves the output as it was
            refuse_shards_beyond(storage, seed_refs, config.shards.prefix)
        done = completed_shards(storage, seed_refs, config.shards.prefix) if resuming else set()
        storage.makedirs()
        storage.write_atomic(json_bytes(run_record(loaded, "running", started=started, listing=listing)), RUN_FILE)
        remove_temporaries(storage)
        summary.skipped_shards = sorted(done)
        todo = seed_refs.filter(pc.invert(pc.is_in(seed_refs.column("shard_index"), value_set=_int_array(done))))
        where = "generated from input.prompts" if config.input.kind == "generate" else f"listed from {config.input.path}"
        log(f"counterfactory: {seed_refs.num_rows} seeds {where}; output {storage.uri}")
        if done:
            log(f"counterfactory: resuming: {len(done)} shard(s) already complete, {todo.num_rows} seeds to go")
        record = provenance(loaded)
        writer = ShardWriter(config.shards, storage, record)
        writer.setup()
        if todo.num_rows:
            init_ray(config.ray)
            contents, seed_ids = seen_in_completed(storage, done, config.shards.prefix)
            registry = start_registry(todo.column("seed_index").to_numpy(), contents, seed_ids,
                                      dedupe=config.input.dedupe and config.input.kind != "generate")
            dataset, work = build_dataset(todo, with_models_resolved(config), loaded.taxonomy, record, registry)
            already = seed_refs.num_rows - todo.num_rows
            progress = Progress(seed_refs.num_rows, already, stream=progress_stream,
                                interval=config.report.progress_interval, rows_per_seed=len(config.plan.axes))

            def write(index: int, rows: list[dict]) -> None:
                result = writer.write_shard(index, rows)
                summary.shards.append(result)
                lock.heartbeat()
                progress.shard_written()
                log(f"counterfactory: wrote {result.tar_name} ({result.samples} member samples) and "
                    f"{result.manifest_name} ({result.manifest_rows} rows)")

            assembler = ShardAssembler(todo.column("seed_index").to_numpy(), todo.column("shard_index").to_numpy(),
                                       len(config.plan.axes), registry, write, copy_rows_maker(todo, loaded))
            _process(dataset, assembler, progress)
            progress.finish()
            summary.work = read_work(work)
        summary.seconds = time.time() - started
        summary.stats, sizes = collect(storage)
        timing = {"seconds": round(summary.seconds, 3), "shards_written": len(summary.shards),
                  "shards_skipped": len(done)}
        storage.write_atomic(json_bytes(sizes), SIZES_FILE)
        # stage_work: what this run's stages did (a resumed run counts only its own shards' work)
        storage.write_atomic(json_bytes({**summary.stats, "timing": timing, "stage_work": summary.work}), STATS_FILE)
        storage.write_atomic(json_bytes(run_record(loaded, "complete", started=started, timing=timing, listing=listing)), RUN_FILE)
        pictures = config.report.enabled if report is None else report
        write_report(storage, config.report.max_sets, pictures=pictures)
    finally:
        lock.release()
    return summary


def _int_array(values: set[int]):
    return pa.array(sorted(values), type=pa.int64())
