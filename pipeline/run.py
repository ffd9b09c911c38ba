"""Run a config end to end: list seeds, run the Ray Data graph, write shards and run files."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.config import LoadedConfig, with_models_resolved
from pipeline.graph import build_dataset, init_ray
from pipeline.tiny_models import resolve_model_ref
from pipeline.typed import to_plain
from schemas import SCHEMA_VERSION
from schemas.records import STATUS_ACCEPTED, STATUS_ERROR
from stages.ingest import list_seeds
from stages.shard_writer import ShardResult, ShardWriter
from stages.storage import Storage


@dataclass
class RunSummary:
    output: str
    shards: list[ShardResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0


def provenance(loaded: LoadedConfig) -> dict:
    config = loaded.config
    return {
        "models": {"captioner": config.caption.model, "editor": config.edit.model, "clip": config.filter.model},
        "generation": {
            "backend": config.edit.backend, "steps": config.edit.steps, "guidance_scale": config.edit.guidance_scale,
            "image_guidance_scale": config.edit.image_guidance_scale, "resolution": config.edit.resolution,
            "candidates_per_set": config.plan.candidates_per_set,
            "thresholds": to_plain(config.filter.thresholds), "rank_by": config.filter.rank_by,
        },
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


class Stats:
    def __init__(self):
        self.manifest_status = Counter()
        self.sets = Counter()
        self.by_concept_axis = defaultdict(Counter)
        self.seed_status = {}
        self.reasons = Counter()

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            self.sets[row["set_status"] or STATUS_ERROR] += 1
            self.by_concept_axis[f"{row.get('concept')}/{row['axis']}"][row["set_status"] or STATUS_ERROR] += 1
            self.seed_status.setdefault(row["seed_index"], row["status"])
            if row["set_status"] == STATUS_ERROR and row.get("set_reason"):
                self.reasons[row["set_reason"].split(":")[0]] += 1
            for cand in row.get("candidates") or []:
                self.manifest_status[cand.get("status") or STATUS_ERROR] += 1
            if row.get("candidates") is None:
                self.manifest_status[STATUS_ERROR] += len(row["members"]) * len(row["candidate_seeds"])

    def as_dict(self, shards: list[ShardResult]) -> dict:
        seeds = Counter(self.seed_status.values())
        return {
            "schema_version": SCHEMA_VERSION,
            "seeds": {"total": len(self.seed_status), "ok": seeds.get("ok", 0), "error": seeds.get("error", 0)},
            "sets": dict(sorted(self.sets.items())),
            "candidates": dict(sorted(self.manifest_status.items())),
            "samples": sum(s.samples for s in shards),
            "shards": len(shards),
            "sets_by_concept_axis": {k: dict(sorted(v.items())) for k, v in sorted(self.by_concept_axis.items())},
            "set_error_kinds": dict(sorted(self.reasons.items())),
        }


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


def write_run_files(storage: Storage, loaded: LoadedConfig, shards: list[ShardResult], stats: dict, timing: dict) -> None:
    storage.write_atomic(_json({s.tar_name: s.samples for s in shards}), "sizes.json")
    storage.write_atomic(_json({**stats, "timing": timing}), "stats.json")
    run = {
        "schema_version": SCHEMA_VERSION,
        "config_path": loaded.path,
        "config_hash": loaded.config_hash,
        "config": to_plain(loaded.config),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "command": sys.argv,
        "timing": timing,
    }
    storage.write_atomic(_json(run), "run.json")
    storage.write_atomic(data_card(loaded, stats, shards).encode("utf-8"), "README.md")


def data_card(loaded: LoadedConfig, stats: dict, shards: list[ShardResult]) -> str:
    config = loaded.config
    prefix = config.shards.prefix
    last = len(shards) - 1
    lines = [
        f"# {config.run.name}: counterfactual image sets",
        "",
        "Synthetic images made by counterfactory. Every member image is generated by a diffusion model and "
        "is marked `synthetic: true` in its sample JSON. For bias research and debiasing only.",
        "",
        f"- shards: `shards/{prefix}-{{000000..{last:06d}}}.tar` ({stats['samples']} accepted sets)",
        f"- manifests: `manifest/{prefix}-NNNNNN.parquet`, one row per member candidate",
        f"- seeds: {stats['seeds']['total']} ({stats['seeds']['error']} could not be used)",
        f"- sets: {json.dumps(stats['sets'])}",
        f"- candidates: {json.dumps(stats['candidates'])}",
        f"- captioner `{config.caption.model}`, editor `{config.edit.model}` ({config.edit.backend}, "
        f"{config.edit.steps} steps), CLIP `{config.filter.model}`",
        f"- run seed {config.run.seed}, config hash `{loaded.config_hash}`",
        "",
        "Known limitations: generated faces and bodies carry the generator's own biases; attribute labels are "
        "what was asked of the editor and checked by CLIP zero-shot, not self-identified.",
        "",
    ]
    return "\n".join(lines)


def run_pipeline(
    loaded: LoadedConfig,
    output: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> RunSummary:
    started = time.time()
    config = loaded.config
    storage = Storage(output or config.run.output)
    seed_refs = list_seeds(config.input, config.shards.seeds_per_shard, limit)
    log(f"counterfactory: {seed_refs.num_rows} seeds listed from {config.input.path}; output {storage.uri}")
    resolved = with_models_resolved(config, resolve_model_ref)
    writer = ShardWriter(config.shards, storage, provenance(loaded))
    writer.setup()
    summary = RunSummary(output=storage.uri)
    stats = Stats()
    if seed_refs.num_rows == 0:
        log("counterfactory: no seeds found; nothing to do")
    else:
        init_ray(config.ray)
        dataset = build_dataset(seed_refs, resolved, loaded.taxonomy)
        first_seen: dict[str, int] = {}
        pending: list[dict] = []
        pending_index = None

        def flush():
            result = writer.write_shard(pending_index, pending)
            stats.add(pending)
            summary.shards.append(result)
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
        if pending_index is not None:
            flush()
    summary.seconds = time.time() - started
    summary.stats = stats.as_dict(summary.shards)
    write_run_files(storage, loaded, summary.shards, summary.stats, {"seconds": round(summary.seconds, 3)})
    return summary
