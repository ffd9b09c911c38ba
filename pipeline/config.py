"""The run config: one YAML file, validated at load time into typed objects.

Relative paths: ``taxonomy`` is resolved against the config file's folder; ``input.path`` and
``run.output`` against the working directory (the repository root under ``ray job submit``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError, read_yaml_mapping
from pipeline.taxonomy import load_taxonomy, restrict_values
from pipeline.typed import build, to_plain
from schemas.taxonomy import Taxonomy
from stages.caption import CaptionConfig
from stages.concept import ConceptConfig
from stages.edit import EditConfig
from stages.filter import FilterConfig
from stages.ingest import IngestConfig
from stages.plan import PlanConfig
from stages.shard_writer import ShardConfig


@dataclass
class RunSection:
    seed: int = 0  # every random draw derives from it (with the set id and candidate index)
    output: str = "out"  # local path or URI (s3://bucket/prefix)
    name: str = "counterfactory"


@dataclass
class RayConfig:
    address: str | None = None  # null: RAY_ADDRESS if set, else a local Ray
    num_cpus: float | None = None  # local Ray only
    num_gpus: float | None = None  # local Ray only: logical GPUs to declare
    preserve_order: bool = True


@dataclass
class CardConfig:
    """What the data card says about the dataset beyond what the run records."""

    description: str | None = None
    license: str | None = None
    creators: list[str] = field(default_factory=list)
    citation: str | None = None


@dataclass
class ReportConfig:
    enabled: bool = True  # write preview.html and plots at the end of run
    max_sets: int = 500  # sets shown in preview.html (first ones by seed order)
    progress_interval: float = 10.0  # seconds between progress lines when output is not a terminal

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.max_sets < 1:
            found.append(("max_sets", "must be >= 1"))
        if self.progress_interval <= 0:
            found.append(("progress_interval", "must be > 0"))
        return found


@dataclass
class PipelineConfig:
    run: RunSection = field(default_factory=RunSection)
    taxonomy: str = "taxonomy.yaml"
    restrict_values: dict[str, list[str]] = field(default_factory=dict)  # attribute -> values to use
    input: IngestConfig = field(default_factory=IngestConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    card: CardConfig = field(default_factory=CardConfig)


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


# Settings that change where and how fast a run goes, never what it makes.
_NOT_HASHED = {"resources", "threads", "device", "address", "num_cpus", "num_gpus", "output", "name", "report", "card"}


def _strip(plain):
    if isinstance(plain, dict):
        return {k: _strip(v) for k, v in plain.items() if k not in _NOT_HASHED}
    if isinstance(plain, (list, tuple)):
        return [_strip(v) for v in plain]
    return plain


def config_hash(config: PipelineConfig, taxonomy: Taxonomy) -> str:
    plain = _strip(to_plain(config))
    plain.pop("ray", None)
    plain["taxonomy"] = to_plain(taxonomy)
    blob = json.dumps(plain, sort_keys=True, default=list).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_against_taxonomy(config: PipelineConfig, taxonomy: Taxonomy, source: str) -> None:
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


def _check_generate_mode(config: PipelineConfig, taxonomy: Taxonomy, source: str) -> None:
    generating, text_to_image = config.input.kind == "generate", config.edit.backend == "text_to_image"
    if generating and not text_to_image:
        raise ConfigError(
            source, "edit.backend",
            f"input.kind generate has no seed photos to edit: use backend text_to_image (got {config.edit.backend})",
        )
    if text_to_image and not generating:
        raise ConfigError(
            source, "input.kind",
            f"edit.backend text_to_image makes its own base images: use input.kind generate (got {config.input.kind})",
        )
    if generating:
        for i, template in enumerate(config.input.prompts):
            words = taxonomy.attribute_words_in(template)
            if words:
                raise ConfigError(
                    source, f"input.prompts[{i}]",
                    f"names protected attribute word(s) {words}: the base prompt must be neutral, the members add them",
                )


def _check_cross_fields(config: PipelineConfig, source: str) -> None:
    from stages.filter import SCORES
    from stages.provenance import WATERMARK_MIN_SIDE

    if config.edit.early_rejection.enabled and all(getattr(config.filter.thresholds, n) is None for n in SCORES):
        raise ConfigError(
            source, "edit.early_rejection.enabled",
            f"judges with the filter's thresholds, and every one is off (null): set one of filter.thresholds.{{{', '.join(SCORES)}}}",
        )

    if config.shards.provenance.watermark and config.edit.resolution < WATERMARK_MIN_SIDE:
        raise ConfigError(
            source, "shards.provenance.watermark",
            f"needs edit.resolution >= {WATERMARK_MIN_SIDE} (got {config.edit.resolution}): "
            "the invisible watermark does not survive in smaller images",
        )


def parse_config(data: dict, source: str = "<config>", base_dir: str | Path = ".") -> LoadedConfig:
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
    _check_cross_fields(config, source)
    _check_generate_mode(config, taxonomy, source)
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


def with_models_resolved(config: PipelineConfig, resolve) -> PipelineConfig:
    """A copy with every model reference passed through ``resolve`` (``tiny:`` refs -> local dirs)."""
    return dataclasses.replace(
        config,
        caption=dataclasses.replace(config.caption, model=resolve(config.caption.model)),
        edit=dataclasses.replace(config.edit, model=resolve(config.edit.model),
                                 mask=dataclasses.replace(config.edit.mask, model=resolve(config.edit.mask.model))),
        filter=dataclasses.replace(config.filter, model=resolve(config.filter.model)),
        concept=dataclasses.replace(config.concept, model=resolve(config.concept.model) if config.concept.model else None),
    )


def environment_overrides() -> dict:
    """``COUNTERFACTORY_OUTPUT`` redirects the output without editing the config (CI, job submission)."""
    out = {}
    if os.environ.get("COUNTERFACTORY_OUTPUT"):
        out["run.output"] = os.environ["COUNTERFACTORY_OUTPUT"]
    return out
