"""``plan CONFIG``: the stage graph with its resources and the work it implies, without loading a model."""

from __future__ import annotations

import math

from pipeline.config import LoadedConfig
from pipeline.graph import stage_specs
from stages.ingest import list_seeds

# UNet evaluations per denoising step: InstructPix2Pix guides on text and image (3 branches).
UNET_EVALS_PER_STEP = {"instruct_pix2pix": 3}


def plan_counts(loaded: LoadedConfig, seeds: int) -> dict:
    config, taxonomy = loaded.config, loaded.taxonomy
    members = {axis: len(taxonomy.axis_value_combinations(axis)) for axis in config.plan.axes}
    candidates = config.plan.candidates_per_set
    images_per_seed = sum(members.values()) * candidates
    calls_per_seed = sum(math.ceil(m * candidates / config.edit.max_batch) for m in members.values())
    images = seeds * images_per_seed
    return {
        "seeds": seeds,
        "axes": members,
        "sets": seeds * len(members),
        "members": seeds * sum(members.values()),
        "candidates_per_set": candidates,
        "edited_images": images,
        "editor_pipeline_calls": seeds * calls_per_seed,
        "unet_evaluations": images * config.edit.steps * UNET_EVALS_PER_STEP[config.edit.backend],
        "shards": math.ceil(seeds / config.shards.seeds_per_shard) if seeds else 0,
    }


def describe(loaded: LoadedConfig, seeds: int | None = None, limit: int | None = None) -> tuple[str, int]:
    config = loaded.config
    lines = [f"config {loaded.path} (hash {loaded.config_hash})", ""]
    if seeds is None:
        try:
            seeds = list_seeds(config.input, config.shards.seeds_per_shard, limit).num_rows
            source = f"listed from {config.input.kind} {config.input.path}"
        except (FileNotFoundError, OSError, ValueError) as exc:
            seeds, source = 0, f"input not readable here ({exc}); pass --seeds N to size the run"
    else:
        source = "as given by --seeds"
    lines.append("stage graph (Ray Data actor pools, in order):")
    lines.append(f"  {'stage':<8} {'model':<44} {'actors':>6} {'cpus':>5} {'gpus':>5} {'batch':>5}")
    models = {"caption": config.caption.model, "edit": f"{config.edit.model} [{config.edit.backend}]",
              "filter": config.filter.model, "concept": config.concept.model}
    for spec in stage_specs(config, loaded.taxonomy):
        r = spec.resources
        lines.append(
            f"  {spec.name:<8} {models.get(spec.name, '-'):<44} {r.actors:>6} {r.num_cpus:>5g} {r.num_gpus:>5g} {r.batch_size:>5}"
        )
    lines.append(f"  {'write':<8} {'(driver) ' + config.shards.prefix + '-NNNNNN.tar + manifest':<44}")
    counts = plan_counts(loaded, seeds)
    lines += ["", f"seeds: {seeds} ({source})"]
    for axis, n in counts["axes"].items():
        lines.append(f"  axis {axis}: {n} members per set")
    lines += [
        f"sets: {counts['sets']}",
        f"members: {counts['members']} x {counts['candidates_per_set']} candidate(s)",
        f"diffusion: {counts['edited_images']} edited images in {counts['editor_pipeline_calls']} pipeline calls "
        f"(max_batch {config.edit.max_batch}), {config.edit.steps} steps, {counts['unet_evaluations']} UNet evaluations",
        f"shards: {counts['shards']} of up to {config.shards.seeds_per_shard} seeds each",
        "no model was loaded",
    ]
    return "\n".join(lines), seeds
