"""``plan CONFIG``: the stage graph with its resources and the work it implies, without loading a model."""

from __future__ import annotations

import math

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import run_models
from pipeline.execution.provenance import provenance
from pipeline.execution.stage_list import stage_specs
from schemas.layout import tar_name
from stages.edit import registry
from stages.ingest.listing import list_seeds


def plan_counts(loaded: LoadedConfig, seeds: int) -> dict:
    config, taxonomy = loaded.config, loaded.taxonomy
    members = {axis: len(taxonomy.axis_value_combinations(axis)) for axis in config.plan.axes}
    candidates = config.plan.candidates_per_set
    editor = registry.backend(config.edit.backend)
    per_set = [editor.images_and_calls(m, candidates, config.edit) for m in members.values()]
    rendered = seeds * sum(n for n, _ in per_set)
    calls = seeds * sum(c for _, c in per_set)
    return {
        "seeds": seeds,
        "axes": members,
        "sets": seeds * len(members),
        "members": seeds * sum(members.values()),
        "candidates_per_set": candidates,
        "edited_images": seeds * sum(members.values()) * candidates,
        "rendered_images": rendered,  # edited images plus generate mode's base images
        "editor_pipeline_calls": calls,
        "unet_evaluations": rendered * editor.denoising_steps(config.edit) * editor.denoiser_evals_per_step(config.edit),
        "shards": math.ceil(seeds / config.shards.seeds_per_shard) if seeds else 0,
    }


HOW_COUNTED = {"folder": "image file names, no image read", "webdataset": "tar headers, no image read",
               "parquet": "rows of the list, no image read"}


def describe(loaded: LoadedConfig, seeds: int | None = None, limit: int | None = None) -> tuple[str, int]:
    config = loaded.config
    lines = [f"config {loaded.path} (hash {loaded.config_hash})", ""]
    if seeds is None:
        try:
            seeds = list_seeds(config.input, config.shards.seeds_per_shard, limit, loaded.concepts).num_rows
            source = ("generated from input.prompts" if config.input.kind == "generate"
                      else f"counted by listing {config.input.kind} {config.input.path}: {HOW_COUNTED[config.input.kind]}")
        except Exception as exc:  # plan never fails on its input: it says why and sizes nothing
            seeds, source = 0, f"input not reachable here: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; " \
                               "pass --seeds N to size the run"
    else:
        source = "as given by --seeds"
    lines.append("stage graph (Ray Data actor pools, in order):")
    lines.append(f"  {'stage':<8} {'model':<44} {'actors':>6} {'cpus':>5} {'gpus':>5} {'batch':>5}")
    editor = registry.backend(config.edit.backend)
    stage_of_role = {"captioner": "caption", "concept": "concept", "editor": "edit", "segmenter": "edit",
                     "clip": "filter", "judge": "filter", "drift_segmenter": "filter"}
    models: dict[str, str] = {}
    for use in run_models(config):
        stage = stage_of_role[use.role]
        models[stage] = f"{models[stage]} + {use.ref}" if stage in models else use.ref
    models["edit"] = f"{models['edit']} [{config.edit.backend}]"
    if config.filter.judge.enabled:
        models["screen"] = f"{config.filter.judge.model} (the judge)"
    models["encode"] = " + ".join([f"JPEG q{config.shards.jpeg_quality}"] + [
                  part for part, on in (("provenance", config.shards.provenance.metadata),
                                        ("watermark", config.shards.provenance.watermark),
                                        ("thumbnails", config.shards.thumbnail_size)) if on])
    for spec in stage_specs(config, loaded.taxonomy, provenance(loaded)):
        r = spec.resources
        lines.append(
            f"  {spec.name:<8} {models.get(spec.name, '-'):<44} {r.actors:>6} {r.num_cpus:>5g} {r.num_gpus:>5g} {r.batch_size:>5}"
        )
    lines.append(f"  {'write':<8} {'(driver) ' + tar_name(config.shards.prefix, 0) + ', ... + manifests':<44}")
    lines.append(f"edit backend {editor.backend}: {editor.summary}")
    counts = plan_counts(loaded, seeds)
    extra = counts["rendered_images"] - counts["edited_images"]
    bases = f" + {extra} base images" if extra else ""
    lines += ["", f"seeds: {seeds} ({source})"]
    for axis, n in counts["axes"].items():
        lines.append(f"  axis {axis}: {n} members per set")
    lines += [
        f"sets: {counts['sets']}",
        f"members: {counts['members']} x {counts['candidates_per_set']} candidate(s)",
        f"diffusion: {counts['edited_images']} edited images{bases} in {counts['editor_pipeline_calls']} "
        f"model calls (max_batch {config.edit.max_batch}), {editor.denoising_steps(config.edit)} steps, "
        f"{counts['unet_evaluations']} denoiser evaluations"
        + (" at most (early rejection stops failing members part-way)" if config.edit.early_rejection.enabled else ""),
        f"shards: {counts['shards']} of up to {config.shards.seeds_per_shard} seeds each",
        "no model was loaded",
    ]
    return "\n".join(lines), seeds
