"""Run a config end to end: list seeds, skip completed shards, run the Ray Data graph, write shards,
then the run files (sizes, stats, run record, data card) from what the output holds."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from pipeline.config import LoadedConfig, with_models_resolved
from pipeline.graph import build_dataset, content_ids, init_ray
from pipeline.output_state import (
    RUN_FILE,
    OutputLock,
    check_config_hash,
    completed_shards,
    remove_temporaries,
)
from pipeline.model_refs import check_model_refs
from pipeline.progress import Progress
from pipeline.report import write_report
from pipeline.stats import collect, seen_seed_ids
from pipeline.tiny_models import resolve_model_ref
from pipeline.typed import to_plain
from schemas import SCHEMA_VERSION
from schemas.records import STATUS_ERROR
from stages.ingest import list_seeds, mark_duplicates
from stages.shard_writer import ShardResult, ShardWriter
from stages.storage import Storage


@dataclass
class RunSummary:
    output: str
    shards: list[ShardResult] = field(default_factory=list)  # written by this run
    skipped_shards: list[int] = field(default_factory=list)  # already complete, left untouched
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0


def generation_settings(config) -> dict:
    """What decided the pixels, as the sample JSON and image metadata record it (backend-specific parts
    only for the backend in use)."""
    edit = config.edit
    out = {
        "backend": edit.backend, "steps": edit.steps, "guidance_scale": edit.guidance_scale,
        "resolution": edit.resolution, "candidates_per_set": config.plan.candidates_per_set,
        "thresholds": to_plain(config.filter.thresholds), "rank_by": config.filter.rank_by,
        "safety": {"enabled": config.filter.safety.enabled, "threshold": config.filter.safety.threshold},
    }
    if edit.backend == "instruct_pix2pix":
        out["image_guidance_scale"] = edit.image_guidance_scale
    if edit.backend in ("img2img", "inpaint"):
        out["strength"] = edit.strength
    if edit.backend == "inpaint":
        out["mask"] = {k: v for k, v in to_plain(edit.mask).items() if k not in ("model", "revision")}
    if edit.backend == "text_to_image":
        out.update(sampler="ddim", guidance_range=edit.guidance_range, p2p=to_plain(edit.p2p),
                   prompts=list(config.input.prompts), early_rejection=to_plain(edit.early_rejection))
    return out


def provenance(loaded: LoadedConfig) -> dict:
    config = loaded.config
    captioner = None if config.input.kind == "generate" else config.caption.model
    models = {"captioner": captioner, "editor": config.edit.model, "clip": config.filter.model}
    revisions = {"captioner": None if captioner is None else config.caption.revision,
                 "editor": config.edit.revision, "clip": config.filter.pretrained}
    if config.edit.backend == "inpaint":
        models["segmenter"], revisions["segmenter"] = config.edit.mask.model, config.edit.mask.revision
    return {
        "models": models,
        "revisions": revisions,
        "generation": generation_settings(config),
        "run_seed": config.run.seed,
        "config_hash": loaded.config_hash,
        "concept_groups": {c.id: c.group for c in loaded.taxonomy.concepts.values()},
    }


def mark_duplicate(row: dict, first_index: int) -> None:
    """The same image listed twice gets one set; the copy is recorded as an error, not generated twice."""
    reason = f"duplicate: same image as seed_index {first_index}"
    row["set_status"], row["set_reason"] = STATUS_ERROR, reason
    for cand in row.get("candidates") or []:
        cand["status"], cand["reason"] = STATUS_ERROR, reason


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("counterfactory", "ray", "torch", "diffusers", "transformers", "open_clip_torch", "webdataset", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _json(data) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def run_record(loaded: LoadedConfig, status: str, **extra) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "config_path": loaded.path,
        "config_hash": loaded.config_hash,
        "config": to_plain(loaded.config),
        "concept_words": {c.id: c.words for c in loaded.taxonomy.concepts.values()},  # for evaluate's prompts
        "versions": _versions(),
        "git_sha": _git_sha(),
        "command": sys.argv,
        **extra,
    }


def _process(dataset, writer: ShardWriter, first_seen: dict, summary: RunSummary, lock: OutputLock, log,
             progress: Progress) -> None:
    """Consume the graph's rows in seed order and write each shard as soon as its last seed is in."""
    pending: list[dict] = []
    pending_index = None

    def flush():
        result = writer.write_shard(pending_index, pending)
        summary.shards.append(result)
        lock.heartbeat()
        progress.shard_written()
        log(f"counterfactory: wrote {result.tar_name} ({result.samples} sets) and {result.manifest_name} "
            f"({result.manifest_rows} rows)")

    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            if pending_index is not None and row["shard_index"] != pending_index:
                flush()
                pending = []
            pending_index = row["shard_index"]
            if row["status"] == "ok":
                first = first_seen.setdefault(row["seed_id"], row["seed_index"])
                if first != row["seed_index"]:
                    mark_duplicate(row, first)
            pending.append(row)
            progress.row(row)
    if pending_index is not None:
        flush()


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
    lock = OutputLock(storage)
    lock.acquire()
    try:
        resuming = check_config_hash(storage, loaded.config_hash)
        storage.makedirs()
        storage.write_atomic(_json(run_record(loaded, "running", started=started)), RUN_FILE)
        remove_temporaries(storage)
        seed_refs = list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts)
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
            if config.input.dedupe and config.input.kind != "generate":
                todo = mark_duplicates(todo, content_ids(todo, config), first_seen)
            resolved = with_models_resolved(config, resolve_model_ref)
            dataset = build_dataset(todo, resolved, loaded.taxonomy, record)
            already = seed_refs.num_rows - todo.num_rows
            progress = Progress(seed_refs.num_rows, already, stream=progress_stream,
                                interval=config.report.progress_interval)
            _process(dataset, writer, first_seen, summary, lock, log, progress)
            progress.finish()
        summary.seconds = time.time() - started
        summary.stats, sizes = collect(storage)
        timing = {"seconds": round(summary.seconds, 3), "shards_written": len(summary.shards),
                  "shards_skipped": len(done)}
        storage.write_atomic(_json(sizes), "sizes.json")
        storage.write_atomic(_json({**summary.stats, "timing": timing}), "stats.json")
        storage.write_atomic(_json(run_record(loaded, "complete", started=started, timing=timing)), RUN_FILE)
        pictures = config.report.enabled if report is None else report
        write_report(storage, config.report.max_sets, pictures=pictures)
    finally:
        lock.release()
    return summary


def _int_array(values: set[int]):
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.int64())
