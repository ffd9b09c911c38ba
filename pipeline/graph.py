"""The Ray Data graph: stages as actor pools with their declared resources.

The only module that imports ``ray.data``. Each stage class is constructed and ``setup()`` once per
actor, then called on pyarrow batches. The last stage encodes each set's files; the shard writer runs on
the driver, consuming the graph's output in seed order and only assembling tars and manifests.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from pipeline.config import PipelineConfig, RayConfig, allowed_concepts
from schemas.taxonomy import Taxonomy
from stages.caption import Captioner
from stages.concept import ZeroShotConcept
from stages.edit import make_editor
from stages.encode import SampleEncoder
from stages.filter import ClipFilter
from stages.ingest import DecodeSeeds
from stages.ingest import content_ids as ingest_content_ids
from stages.plan import Planner
from stages import faults
from stages.resources import Resources

# Environment the workers need to behave like the driver (offline Hub access above all).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "COUNTERFACTORY_CACHE")


@dataclass
class StageSpec:
    name: str
    factory: Callable[[], object]
    resources: Resources


def stage_specs(config: PipelineConfig, taxonomy: Taxonomy, provenance: dict) -> list[StageSpec]:
    """The stages of a run, in order, each with how to build it and what it asks for; ``provenance``
    (pipeline.run.provenance) is what the encoded files say about how they were made."""
    concepts = allowed_concepts(config, taxonomy)
    specs = [StageSpec("ingest", functools.partial(DecodeSeeds, config.input), config.input.resources)]
    if config.input.kind != "generate":  # generated seeds have no photo: the caption is the base prompt
        specs.append(StageSpec("caption", functools.partial(Captioner, config.caption), config.caption.resources))
        if config.concept.model:
            specs.append(
                StageSpec("concept", functools.partial(ZeroShotConcept, config.concept, concepts), config.concept.resources)
            )
    return specs + [
        StageSpec("plan", functools.partial(Planner, config.plan, taxonomy, config.run.seed), config.plan.resources),
        StageSpec("edit", functools.partial(make_editor, config.edit, config.filter), config.edit.resources),
        StageSpec("filter", functools.partial(ClipFilter, config.filter), config.filter.resources),
        StageSpec("encode", functools.partial(SampleEncoder, config.shards, provenance), config.shards.resources),
    ]


class StageActor:
    """Ray Data callable class around a stage: build and set up once per actor, then map batches."""

    def __init__(self, name: str, factory: Callable[[], object], fault_spec: str | None = None):
        faults.install(fault_spec)
        self.name = name
        self.stage = factory()
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        faults.check_crash(self.name)
        return self.stage(batch)


def named_actor_class(stage: str) -> type:
    """A StageActor subclass named after the stage, so Ray's progress and dashboard say
    ``MapBatches(EditStage)`` rather than the same name for every stage (pickled by value)."""
    name = f"{stage.title()}Stage"
    return type(name, (StageActor,), {"__qualname__": f"named_actor_class.<locals>.{name}"})


def init_ray(config: RayConfig):
    import ray

    if ray.is_initialized():
        return ray
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        # On a cluster the job's runtime env (configs/runtime_env.yaml) sets the workers' environment;
        # a second runtime env from the driver would conflict with it.
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(
            num_cpus=config.num_cpus, num_gpus=config.num_gpus, include_dashboard=False,
            runtime_env={"env_vars": env} if env else None,
        )
    return ray


def _blocks(seed_refs: pa.Table) -> list[pa.Table]:
    blocks = max(1, min(seed_refs.num_rows, 64))
    size = -(-seed_refs.num_rows // blocks) if seed_refs.num_rows else 1
    return [seed_refs.slice(i, size) for i in range(0, max(seed_refs.num_rows, 1), size)]


def content_ids(seed_refs: pa.Table, config: PipelineConfig) -> dict[int, str]:
    """The dedupe pre-pass: every input's content id, read in parallel as Ray tasks."""
    import ray.data

    ds = ray.data.from_arrow(_blocks(seed_refs)).map_batches(
        ingest_content_ids, batch_format="pyarrow", batch_size=config.input.resources.batch_size,
        num_cpus=config.input.resources.num_cpus,
    )
    out: dict[int, str] = {}
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for index, cid in zip(batch.column("seed_index").to_pylist(), batch.column("content_id").to_pylist()):
            if cid is not None:
                out[index] = cid
    return out


def build_dataset(seed_refs: pa.Table, config: PipelineConfig, taxonomy: Taxonomy, provenance: dict):
    import ray.data
    from ray.data import ActorPoolStrategy

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = config.ray.preserve_order
    ds = ray.data.from_arrow(_blocks(seed_refs))
    fault_spec = os.environ.get(faults.ENV)
    for spec in stage_specs(config, taxonomy, provenance):
        res = spec.resources
        ds = ds.map_batches(
            named_actor_class(spec.name),
            fn_constructor_args=(spec.name, spec.factory, fault_spec),
            batch_format="pyarrow",
            batch_size=res.batch_size,
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus if res.num_gpus > 0 else None,
            compute=ActorPoolStrategy(size=res.actors),
            # A dead actor is restarted and its batch retried, a bounded number of times; rows reach
            # the writer once either way, since the driver writes only what the graph yields.
            max_restarts=res.max_restarts,
            max_task_retries=res.max_restarts,
        )
    return ds
