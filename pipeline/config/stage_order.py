"""Which stages a run has, in order, from its config alone (nothing is built): the order
pipeline.execution.stage_list builds them in, and what ``ray.fuse`` is checked against at load time."""

from __future__ import annotations

from pipeline.config.errors import ConfigError
from pipeline.config.sections import PipelineConfig
from stages.caption import Captioner
from stages.concept import ZeroShotConcept
from stages.edit import registry
from stages.edit.base import Editor
from stages.encode import SampleEncoder
from stages.filter import ClipFilter
from stages.ingest.decode import DecodeSeeds
from stages.screen import SeedScreen
from stages.sets.stage import SetPlanner


# Every stage a run may have, in order.
STAGE_NAMES = (DecodeSeeds.name, Captioner.name, ZeroShotConcept.name, SeedScreen.name, SetPlanner.name, Editor.name,
               ClipFilter.name, SampleEncoder.name)


def run_stages(config: PipelineConfig) -> list[str]:
    """The run's stage names in order: generated seeds have no photo, so no caption, concept or screen; the
    concept stage only with a ``concept.model``; the seed screen only with the judge's ``screen_seeds``."""
    names = [DecodeSeeds.name]
    if config.input.kind != "generate":
        names.append(Captioner.name)
        if config.concept.model:
            names.append(ZeroShotConcept.name)
        if config.filter.judge.enabled and config.filter.judge.screen_seeds:
            names.append(SeedScreen.name)
    return names + [SetPlanner.name, registry.backend(config.edit.backend).name, ClipFilter.name, SampleEncoder.name]


def check_fuse(config: PipelineConfig, source: str) -> None:
    """Each ``ray.fuse`` group: two or more stage names in the stages' order, none in two groups, and of those the run
    has, neighbours in its order. A stage the run does not have is left out of its group (``concept.model: null`` on
    a config that fuses caption and concept keeps caption's group)."""
    stages, taken = run_stages(config), set()
    for i, group in enumerate(config.ray.fuse):
        field = f"ray.fuse[{i}]"
        unknown = [name for name in group if name not in STAGE_NAMES]
        if unknown:
            raise ConfigError(source, field, f"unknown stage {unknown[0]!r}; allowed, in order: {', '.join(STAGE_NAMES)}")
        if len(group) < 2:
            raise ConfigError(source, field, "name two or more stages to run in one actor (a stage alone has its own)")
        if taken & set(group) or len(set(group)) < len(group):
            raise ConfigError(source, field, "a stage may be in one group only, once")
        present = [name for name in group if name in stages]
        first = stages.index(present[0]) if present else 0
        if [n for n in STAGE_NAMES if n in group] != list(group) or present != stages[first:first + len(present)]:
            raise ConfigError(source, field, f"stages run in one actor must be next to each other, in the run's "
                                             f"order: {', '.join(stages)}")
        taken |= set(group)
