"""The run config: one YAML file, validated at load time into typed objects.

Relative paths: ``taxonomy`` is resolved against the config file's folder; ``input.path`` and
``run.output`` against the working directory (the repository root under ``ray job submit``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.errors import ConfigError, read_yaml_mapping
from pipeline.config.hashing import config_hash
from pipeline.config.sections import PipelineConfig
from pipeline.config.stage_order import check_fuse
from pipeline.config.taxonomy import load_taxonomy, restrict_values
from pipeline.config.typed import build
from schemas.taxonomy import Taxonomy
from stages.edit import registry
from stages.utils.provenance import WATERMARK_MIN_SIDE


@dataclass
class LoadedConfig:
    config: PipelineConfig
    taxonomy: Taxonomy
    path: str

    @property
    def config_hash(self) -> str:
        return config_hash(self.config, self.taxonomy)

    @property
    def concepts(self) -> list:
        """The taxonomy concepts this run may assign (plan.concepts, or all), in config order."""
        return allowed_concepts(self.config, self.taxonomy)


def allowed_concepts(config: "PipelineConfig", taxonomy: Taxonomy) -> list:
    return [taxonomy.concepts[c] for c in (config.plan.concepts or list(taxonomy.concepts))]


def _check_against_taxonomy(config: PipelineConfig, taxonomy: Taxonomy, source: str) -> None:
    for i, attribute in enumerate(config.filter.drift.record_only_attributes):
        if attribute not in taxonomy.attributes:
            raise ConfigError(source, f"filter.drift.record_only_attributes[{i}]",
                              f"unknown attribute {attribute!r}; allowed: {', '.join(taxonomy.attributes)}")
    for i, axis in enumerate(config.plan.axes):
        if axis not in taxonomy.axes:
            raise ConfigError(source, f"plan.axes[{i}]", f"unknown axis {axis!r}; allowed: {', '.join(taxonomy.axes)}")
    for i, concept in enumerate(config.plan.concepts):
        if concept not in taxonomy.concepts:
            raise ConfigError(
                source, f"plan.concepts[{i}]", f"unknown concept {concept!r}; allowed: {', '.join(taxonomy.concepts)}"
            )
    allowed = config.plan.concepts or list(taxonomy.concepts)
    if config.plan.default_concept not in allowed:
        raise ConfigError(
            source, "plan.default_concept",
            f"unknown concept {config.plan.default_concept!r}; allowed: {', '.join(allowed)}",
        )


def _check_backend(config: PipelineConfig, taxonomy: Taxonomy, source: str) -> None:
    """The edit backend exists, fits the input kind, and its own checks pass."""
    try:
        editor = registry.backend(config.edit.backend)
    except ValueError as exc:
        raise ConfigError(source, "edit.backend", str(exc)) from None
    generating = config.input.kind == "generate"
    if generating and not editor.makes_own_seeds:
        raise ConfigError(
            source, "edit.backend",
            f"input.kind generate has no seed photos to edit: use backend {_backends_that('makes_own_seeds')} "
            f"(got {config.edit.backend})",
        )
    if editor.makes_own_seeds and not generating:
        raise ConfigError(
            source, "input.kind",
            f"edit.backend {config.edit.backend} makes its own base images: use input.kind generate (got {config.input.kind})",
        )
    if config.edit.guidance_range is not None and not editor.draws_per_candidate:
        raise ConfigError(source, "edit.guidance_range", f"only the {_backends_that('draws_per_candidate')} backend draws "
                                                         f"guidance per candidate (backend is {config.edit.backend})")
    if config.edit.early_rejection.enabled and not editor.stops_early:
        raise ConfigError(source, "edit.early_rejection.enabled",
                          f"only the {_backends_that('stops_early')} backend can stop members part-way "
                          f"(backend is {config.edit.backend})")
    config.edit = editor.with_defaults(config.edit)
    edit = config.edit
    if edit.negative_prompt is not None and not editor.takes_negative_prompt:
        raise ConfigError(source, "edit.negative_prompt", f"{edit.backend} takes no negative prompt; allowed with: "
                                                          f"{_backends_that('takes_negative_prompt', ', ')}")
    if edit.preserve_identity and editor.prompt_field != "instruction":
        raise ConfigError(source, "edit.preserve_identity", f"{edit.backend} is prompted with the target caption, "
                                                            "not an instruction: the identity clause does not apply")
    if edit.keep_background and editor.makes_own_seeds:
        raise ConfigError(source, "edit.keep_background", f"{edit.backend} makes its own base images: there is no "
                                                          "seed photo to keep")
    problems = editor.config_problems(config)
    if problems:
        raise ConfigError(source, *problems[0])
    if generating:
        for i, template in enumerate(config.input.prompts):
            words = taxonomy.attribute_words_in(template)
            if words:
                raise ConfigError(
                    source, f"input.prompts[{i}]",
                    f"names protected attribute word(s) {words}: the base prompt must be neutral, the members add them",
                )


def _backends_that(capability: str, joiner: str = " or ") -> str:
    return joiner.join(name for name, editor in registry.BACKENDS.items() if getattr(editor, capability))


def _fill_judge_model(config: PipelineConfig) -> None:
    """filter.judge.model left null: the captioner's model, at its pinned revision."""
    judge = config.filter.judge
    if judge.enabled and judge.model is None:
        if config.input.kind == "generate":
            return  # no captioner: _check_cross_fields says so
        judge.model, judge.revision = config.caption.model, config.caption.revision


def _check_cross_fields(config: PipelineConfig, source: str) -> None:
    judge = config.filter.judge
    if judge.enabled and judge.model is None:
        raise ConfigError(source, "filter.judge.model", "generate mode has no captioner to take the judge from: "
                                                        "name a chat VLM")
    if judge.enabled and judge.model == config.caption.model and (
            config.caption.style == "prefix" or "blip" in judge.model.lower()):
        raise ConfigError(source, "filter.judge.model", f"the captioner {judge.model} is not a chat VLM, so it "
                                                        "cannot judge: name one (Qwen2.5-VL, SmolVLM, LLaVA)")
    if config.input.people == "one" and not (judge.enabled and judge.screen_seeds):
        raise ConfigError(source, "input.people", "one needs the seed screen: set filter.judge.enabled and "
                                                  "filter.judge.screen_seeds")
    if config.shards.provenance.watermark and config.edit.resolution < WATERMARK_MIN_SIDE:
        raise ConfigError(
            source, "shards.provenance.watermark",
            f"needs edit.resolution >= {WATERMARK_MIN_SIDE} (got {config.edit.resolution}): "
            "the invisible watermark does not survive in smaller images",
        )


def _check_moved_fields(data: dict, source: str) -> None:
    shards = data.get("shards")
    if isinstance(shards, dict) and "resources" in shards:
        raise ConfigError(source, "shards.resources", "moved to encode.resources (the encode stage's actor pool)")


def parse_config(data: dict, source: str = "<config>", base_dir: str | Path = ".") -> LoadedConfig:
    _check_moved_fields(data, source)
    config = build(PipelineConfig, data, "", source)
    taxonomy_path = Path(config.taxonomy)
    if not taxonomy_path.is_absolute():
        taxonomy_path = Path(base_dir) / taxonomy_path
    taxonomy = load_taxonomy(taxonomy_path)
    for attribute, values in config.restrict_values.items():
        if attribute not in taxonomy.attributes:
            raise ConfigError(
                source, f"restrict_values.{attribute}",
                f"unknown attribute {attribute!r}; allowed: {', '.join(taxonomy.attributes)}",
            )
        known = taxonomy.attributes[attribute].values
        for i, value in enumerate(values):
            if value not in known:
                raise ConfigError(
                    source, f"restrict_values.{attribute}[{i}]",
                    f"unknown value {value!r} of {attribute}; allowed: {', '.join(known)}",
                )
        if len(set(values)) < 2:
            raise ConfigError(source, f"restrict_values.{attribute}", "keep at least two distinct values")
    taxonomy = restrict_values(taxonomy, config.restrict_values)
    _check_against_taxonomy(config, taxonomy, source)
    _fill_judge_model(config)
    _check_cross_fields(config, source)
    _check_backend(config, taxonomy, source)
    check_fuse(config, source)
    return LoadedConfig(config=config, taxonomy=taxonomy, path=source)


def load_config(path: str | Path, overrides: dict | None = None) -> LoadedConfig:
    path = Path(path)
    data = read_yaml_mapping(path, "config")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(data, str(path), path.parent)


def environment_overrides() -> dict:
    """``COUNTERFACTORY_OUTPUT`` redirects the output without editing the config (CI, job submission)."""
    out = {}
    if os.environ.get("COUNTERFACTORY_OUTPUT"):
        out["run.output"] = os.environ["COUNTERFACTORY_OUTPUT"]
    return out
