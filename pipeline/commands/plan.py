"""``plan CONFIG``: the stage graph with its resources and the work it implies, without loading a model."""

from __future__ import annotations

import math

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import run_models
from pipeline.execution.provenance import provenance
from pipeline.execution.stage_list import stage_specs
from pipeline.execution.stage_pools import stage_pools
from schemas.layout import tar_name
from stages.edit import registry
from stages.ingest.listing import list_seeds


def expected_candidates(most: int, pass_rate: float) -> float:
    """Candidates a member renders in first_pass rounds when each passes with probability ``pass_rate``, independently:
    sum over r < K of (1 - p)^r = (1 - (1 - p)^K) / p (K when p is 0)."""
    if pass_rate <= 0:
        return float(most)
    return (1 - (1 - pass_rate) ** most) / pass_rate


def plan_counts(loaded: LoadedConfig, seeds: int, pass_rate: float | None = None) -> dict:
    """The run's work. With ``plan.candidates.stop: first_pass`` and a ``pass_rate`` (the chance that a member's
    candidate passes the filter; generate mode: that a candidate set does), the expected candidates, not the most:
    members stopping at their first pass, not sets stopping at ``min_members`` (so still an upper bound there)."""
    config, taxonomy = loaded.config, loaded.taxonomy
    members = {axis: len(taxonomy.axis_value_combinations(axis)) for axis in config.plan.axes}
    most = config.plan.max_candidates()
    first_pass = config.plan.candidates.stop == "first_pass" and pass_rate is not None
    candidates = expected_candidates(most, pass_rate) if first_pass else most
    editor = registry.backend(config.edit.backend)
    per_set = [editor.images_and_calls(m, candidates, config.edit) for m in members.values()]
    rendered = round(seeds * sum(n for n, _ in per_set))
    calls = seeds * sum(c for _, c in per_set)
    return {
        "seeds": seeds,
        "axes": members,
        "sets": seeds * len(members),
        "members": seeds * sum(members.values()),
        "candidates_per_set": most,
        "candidates_per_member": candidates,  # expected, in first_pass with a pass rate; else the most
        "edited_images": round(seeds * sum(members.values()) * candidates),
        "rendered_images": rendered,  # edited images plus generate mode's base images
        "editor_pipeline_calls": calls,
        "unet_evaluations": rendered * editor.denoising_steps(config.edit) * editor.denoiser_evals_per_step(config.edit),
        "shards": math.ceil(seeds / config.shards.seeds_per_shard) if seeds else 0,
    }


HOW_COUNTED = {"folder": "image file names, no image read", "webdataset": "tar headers, no image read",
               "parquet": "rows of the list, no image read"}


def describe(loaded: LoadedConfig, seeds: int | None = None, limit: int | None = None,
             pass_rate: float | None = None) -> tuple[str, int]:
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
    lines.append("stage graph (Ray Data actor pools, in order" + ("; the fused ones below" if config.ray.fuse else "") + "):")
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
    specs = stage_specs(config, loaded.taxonomy, provenance(loaded))
    for spec in specs:
        r = spec.resources
        lines.append(
            f"  {spec.name:<8} {models.get(spec.name, '-'):<44} {r.actors:>6} {r.num_cpus:>5g} {r.num_gpus:>5g} {r.batch_size:>5}"
        )
    lines.append(f"  {'write':<8} {'(driver) ' + tar_name(config.shards.prefix, 0) + ', ... + manifests':<44}")
    for pool in stage_pools(specs, config.ray.fuse):
        if len(pool.stages) > 1:
            r = pool.resources
            lines.append(f"  fused (ray.fuse): {pool.name} in one pool: {r.actors} actor(s), {r.num_cpus:g} cpus, "
                         f"{r.num_gpus:g} gpus, batches of {r.batch_size}")
    lines.append(f"edit backend {editor.backend}: {editor.summary}")
    counts = plan_counts(loaded, seeds, pass_rate)
    extra = counts["rendered_images"] - counts["edited_images"]
    bases = f" + {extra} base images" if extra else ""
    lines += ["", f"seeds: {seeds} ({source})"]
    for axis, n in counts["axes"].items():
        lines.append(f"  axis {axis}: {n} members per set")
    lines += [
        f"sets: {counts['sets']}",
        f"members: {counts['members']} x {counts['candidates_per_set']} candidate(s)" + _rounds_note(config, counts, pass_rate),
        f"diffusion: {counts['edited_images']} edited images{bases} in {counts['editor_pipeline_calls']} "
        f"model calls (max_batch {config.edit.max_batch}), {editor.denoising_steps(config.edit)} steps, "
        f"{counts['unet_evaluations']} denoiser evaluations"
        + (" at most (early rejection stops failing members part-way)" if config.edit.early_rejection.enabled else ""),
        f"shards: {counts['shards']} of up to {config.shards.seeds_per_shard} seeds each",
        "no model was loaded",
    ]
    return "\n".join(lines), seeds


def _rounds_note(config, counts: dict, pass_rate: float | None) -> str:
    if config.plan.candidates.stop != "first_pass":
        return "" if pass_rate is None else " (--pass-rate prices plan.candidates.stop first_pass only: not this config)"
    if pass_rate is None:
        return " at most, rendered in rounds until the first pass (first_pass; --pass-rate P prices the expected)"
    unit = "candidate set" if config.input.kind == "generate" else "candidate"
    return (f" at most; first_pass at a {unit} pass rate of {pass_rate:g}: "
            f"{counts['candidates_per_member']:.3f} expected, priced below")
