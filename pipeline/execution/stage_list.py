"""The stages of a run, in order, each with how to build it and the resources it asks for: what both
executors (Ray, local) run."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from pipeline.config.loading import allowed_concepts
from pipeline.config.sections import PipelineConfig
from pipeline.config.stage_order import run_stages
from schemas.articles import with_article
from schemas.taxonomy import Taxonomy
from stages.base import Resources, Stage
from stages.caption import Captioner
from stages.concept import ZeroShotConcept
from stages.edit import registry
from stages.encode import SampleEncoder
from stages.filter import ClipFilter
from stages.screen import SeedScreen
from stages.models.judge_checks import JudgeVocabulary
from stages.sets.phrasing import person_phrase
from stages.ingest.decode import DecodeSeeds
from stages.sets.stage import SetPlanner


def judge_vocabulary(taxonomy: Taxonomy) -> JudgeVocabulary:
    """The words the filter's judge asks with: "a woman", "an Asian person", "a chef"."""
    return JudgeVocabulary(
        value_phrases={a.id: {v.id: person_phrase((v,)) for v in a.values.values()}
                       for a in taxonomy.attributes.values()},
        attribute_names={a.id: a.id.replace("_", " ") for a in taxonomy.attributes.values()},
        concept_phrases={c.id: with_article(c.words) for c in taxonomy.concepts.values()},
    )


@dataclass
class StageSpec:
    name: str
    factory: Callable[[], Stage]
    resources: Resources


def stage_specs(config: PipelineConfig, taxonomy: Taxonomy, provenance: dict, claim=None) -> list[StageSpec]:
    """The run's stages (pipeline.config.stage_order) with how each is built. ``provenance``
    (pipeline.execution.provenance) is what the encoded files say about how they were made; ``claim``: the run's
    record of seeds seen, for ingest (None: no streaming dedupe). The editor class is looked up here, on the
    driver, so a backend registered by the caller reaches the workers with the factory."""
    editor = registry.backend(config.edit.backend)
    vocabulary = judge_vocabulary(taxonomy)
    judge = config.filter.judge
    built = {
        DecodeSeeds.name: (functools.partial(DecodeSeeds, config.input, claim), config.input.resources),
        Captioner.name: (functools.partial(Captioner, config.caption), config.caption.resources),
        ZeroShotConcept.name: (functools.partial(ZeroShotConcept, config.concept, allowed_concepts(config, taxonomy)),
                               config.concept.resources),
        SeedScreen.name: (functools.partial(SeedScreen, judge, config.input.people, config.filter.device),
                          config.filter.resources),
        SetPlanner.name: (functools.partial(SetPlanner, config.plan, taxonomy, config.run.seed), config.plan.resources),
        editor.name: (functools.partial(editor, config.edit, config.filter, config.plan.candidates, vocabulary),
                      config.edit.resources),
        ClipFilter.name: (functools.partial(ClipFilter, config.filter, vocabulary), config.filter.resources),
        SampleEncoder.name: (functools.partial(SampleEncoder, config.shards, provenance), config.encode.resources),
    }
    return [StageSpec(name, *built[name]) for name in run_stages(config)]
