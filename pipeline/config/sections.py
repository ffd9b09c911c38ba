"""The run config's sections as typed dataclasses: the driver's own (run, ray, report, card) and, for each
stage, the section its stage module declares. ``PipelineConfig`` is one YAML file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stages.caption import CaptionConfig
from stages.concept import ConceptConfig
from stages.edit.config import EditConfig
from stages.encode import EncodeConfig, ShardConfig
from stages.filter import FilterConfig
from stages.ingest.config import IngestConfig
from stages.sets.stage import PlanConfig


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
    preserve_order: bool = False  # the writer takes rows in any order; true only makes Ray Data buffer them
    # Ray Data's per-operator progress bars and execution logs: null shows them only on a terminal (a job's
    # logs and CI keep the project's own progress line); `run --verbose` turns them on
    progress_bars: bool | None = None
    # Seeds between the input and the driver at once: the input is read only as far ahead of the slowest stage as
    # this (in blocks of 32). null: eight times what the stages' actors hold (actors x batch x tasks in flight);
    # too few leaves actors idle
    seeds_in_flight: int | None = None
    # Stages that run in one actor, each batch through them in turn, instead of an actor pool each: groups of
    # stages next to each other in the run's order, e.g. [[sets, edit, filter, encode]]; a stage the run does not
    # have is left out. A group's pool asks for the most CPUs and restarts any of its stages asks for, their GPU
    # fractions added (at most one device, or the largest whole-GPU ask), the GPU stages' actors, and takes its
    # first stage's batches (each later stage its own batch_size). Fewer processes start and load models (what a
    # few cores wait for); each stage's own pool overlaps the stages' work, which pays where each has a device
    fuse: list[list[str]] = field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        if self.seeds_in_flight is not None and self.seeds_in_flight < 32:
            return [("seeds_in_flight", "must be >= 32, one input block (or null: 8x what the stages' actors hold)")]
        return []


@dataclass
class CardConfig:
    """What the data card says about the dataset beyond what the run records."""

    description: str | None = None
    license: str | None = None
    creators: list[str] = field(default_factory=list)
    citation: str | None = None
    version: str = "1.0.0"  # the dataset's semantic version (croissant.json); the config hash is recorded apart
    url: str | None = None  # where the dataset is published

    def problems(self) -> list[tuple[str, str]]:
        if not re.fullmatch(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?", self.version):
            return [("version", f"{self.version!r} is not a semantic version such as 1.0.0")]
        return []


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
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    card: CardConfig = field(default_factory=CardConfig)
