"""Run a config end to end: list seeds, skip completed shards, run the Ray Data graph, write shards,
then the run files (sizes, stats, run record, data card) from what the output holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import check_model_refs, with_models_resolved
from pipeline.execution.driver_heap import HeapTrimmer
from pipeline.execution.progress import Progress
from pipeline.execution.provenance import provenance
from pipeline.execution.assembler import ShardAssembler
from pipeline.execution.ray_executor import build_dataset, init_ray, read_work, start_registry
from pipeline.output.run_record import json_bytes, run_record
from pipeline.output.shard_writer import ShardResult, ShardWriter
from pipeline.output.state import OutputLock, check_config_hash, completed_shards, remove_temporaries
from pipeline.output.stats import collect, seen_seed_ids
from pipeline.output.storage import Storage
from pipeline.report.build import write_report
from schemas.layout import RUN_FILE, SIZES_FILE, STATS_FILE
from schemas.records import STATUS_OK
from stages.base import fail_set
from stages.ingest.listing import list_seeds
from stages.ingest.decode import DecodeSeeds
from stages.ingest.reading import duplicate_reason
from stages.sets.stage import SetPlanner


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
    batches = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
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


def copy_rows_maker(todo: pa.Table, loaded: LoadedConfig) -> Callable[[int, int, str], list[dict]]:
    """The rows a copy gets when ingest catches it (an error seed, planned into error sets), made on the
    driver for a copy that was read before its original; no model is involved."""
    config = loaded.config
    order = todo.column("seed_index").to_numpy()  # ascending
    decode, planner = DecodeSeeds(config.input), SetPlanner(config.plan, loaded.taxonomy, config.run.seed)

    def copy_rows(seed_index: int, original: int, content_id: str) -> list[dict]:
        ref = todo.slice(int(np.searchsorted(order, seed_index)), 1).to_pylist()[0]
        ref.update(source_error=duplicate_reason(original), source_seed_id=content_id)
        return planner.process_rows(decode.process_rows([ref]))

    return copy_rows


def mark_repeated_seed(row: dict, first_seen: dict[str, int]) -> None:
    """A set whose seed id was seen at an earlier seed index becomes a duplicate error: one image listed
    twice gives one set (the dedupe pre-pass usually catches it before any work)."""
    if row["status"] == STATUS_OK:
        first = first_seen.setdefault(row["seed_id"], row["seed_index"])
        if first != row["seed_index"]:
            fail_set(row, duplicate_reason(first))


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
    check_model_refs(config, loaded.path)
    storage = Storage(output or config.run.output)
    summary = RunSummary(output=storage.uri)
    # Listed before the output is touched: an input that cannot be reached leaves no output behind.
    seed_refs = list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts)
    lock = OutputLock(storage)
    lock.acquire()
    try:
        resuming = check_config_hash(storage, loaded.config_hash)
        storage.makedirs()
        storage.write_atomic(json_bytes(run_record(loaded, "running", started=started)), RUN_FILE)
        remove_temporaries(storage)
        done = completed_shards(storage, seed_refs, config.shards.prefix) if resuming else set()
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
            first_seen = seen_seed_ids(storage, done, config.shards.prefix)
            registry = start_registry(todo.column("seed_index").to_numpy(), first_seen,
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
        storage.write_atomic(json_bytes(run_record(loaded, "complete", started=started, timing=timing)), RUN_FILE)
        pictures = config.report.enabled if report is None else report
        write_report(storage, config.report.max_sets, pictures=pictures)
    finally:
        lock.release()
    return summary


def _int_array(values: set[int]):
    return pa.array(sorted(values), type=pa.int64())
