"""What a run's files say about how they were made: models, revisions, generation settings, run seed and
config hash (the sample JSON, each image's own metadata, the manifest)."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.config.loading import LoadedConfig
from pipeline.config.model_refs import run_models
from stages.edit import registry

# The roles a sample records, always present (null when the run has no such model).
RECORDED_ROLES = ("captioner", "editor", "clip", "judge")


def generation_settings(config) -> dict:
    """What decided the pixels: the settings every backend shares, then the backend's own."""
    edit = config.edit
    editor = registry.backend(edit.backend)
    safety = config.filter.safety
    kept = editor.keeps_background(edit)
    mask = {k: v for k, v in asdict(edit.mask).items() if k not in ("model", "revision")} if kept else None
    return {
        "backend": edit.backend, "steps": edit.steps, "guidance_scale": edit.guidance_scale,
        "resolution": edit.resolution, "candidates_per_set": config.plan.max_candidates(),
        "thresholds": asdict(config.filter.thresholds), "rank_by": config.filter.rank_by,
        "identity_rank_by": config.filter.identity_rank_by,
        "safety": {"enabled": safety.enabled, "threshold": safety.threshold},
        "keep_background": kept, "mask": mask,
        # only where set, so that best_of runs record what they always did
        **({"candidate_stop": "first_pass"} if config.plan.candidates.stop == "first_pass" else {}),
        "identity_clause": edit.identity_clause if edit.preserve_identity else None,
        "judge": ({"thresholds": asdict(judge.thresholds), "min_answer_mass": judge.min_answer_mass,
                   "image_side": judge.image_side, "screen_seeds": judge.screen_seeds}
                  if (judge := config.filter.judge).enabled else None),
        "drift": ({"max_delta_l": drift.max_delta_l, "max_delta_hue": drift.max_delta_hue,
                   "record_only_attributes": list(drift.record_only_attributes), "skin_prompt": drift.skin_prompt}
                  if (drift := config.filter.drift).enabled else None),
        **editor.generation_settings(config),
    }


def provenance(loaded: LoadedConfig) -> dict:
    config = loaded.config
    uses = [u for u in run_models(config) if u.role != "concept"]
    models = {role: None for role in RECORDED_ROLES} | {u.role: u.ref for u in uses}
    revisions = {role: None for role in RECORDED_ROLES} | {u.role: u.revision for u in uses}
    return {
        "models": models,
        "revisions": revisions,
        "generation": generation_settings(config),
        "run_seed": config.run.seed,
        "config_hash": loaded.config_hash,
        "concept_groups": {c.id: c.group for c in loaded.taxonomy.concepts.values()},
    }
