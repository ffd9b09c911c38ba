"""The Ray executor: the stage list as Ray Data actor pools with their declared resources. The one module
that imports ``ray.data``.

Each stage is constructed and ``start()``-ed once per actor, then called on pyarrow batches; what its
counters gained per batch goes to a ``WorkCounter`` actor that the driver reads at the end. The last stage
encodes each set's files; the shard writer runs on the driver, consuming the graph's output in seed order.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Callable

import pyarrow as pa

from pipeline.config.sections import PipelineConfig, RayConfig
from pipeline.execution.stage_list import stage_specs
from pipeline.execution.work_counter import WorkCounter
from schemas.taxonomy import Taxonomy
from stages.ingest.reading import content_ids as batch_content_ids
from stages.utils import faults

# Environment the workers need to behave like the driver (offline Hub access above all).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "COUNTERFACTORY_CACHE")


class StageActor:
    """Ray Data callable class around a stage: build and start once per actor, then map batches."""

    def __init__(self, name: str, factory: Callable[[], object], fault_spec: str | None = None, work=None):
        faults.install(fault_spec)
        self.name = name
        self.work = work
        self.stage = factory()
        self.stage.start()

    def __call__(self, batch: pa.Table) -> pa.Table:
        faults.check_crash(self.name)
        before = Counter(self.stage.counters)
        out = self.stage(batch)
        gained = self.stage.counters - before
        if self.work is not None and gained:
            import ray

            # Waited for: an actor Ray Data tears down must not take its last counts with it.
            ray.get(self.work.add.remote(self.name, dict(gained)))
        return out


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


def read_content_ids(seed_refs: pa.Table, config: PipelineConfig) -> dict[int, str]:
    """The dedupe pre-pass: every input's content id, read in parallel as Ray tasks."""
    import ray.data

    ds = ray.data.from_arrow(_blocks(seed_refs)).map_batches(
        batch_content_ids, batch_format="pyarrow", batch_size=config.input.resources.batch_size,
        num_cpus=config.input.resources.num_cpus,
    )
    out: dict[int, str] = {}
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for index, cid in zip(batch.column("seed_index").to_pylist(), batch.column("content_id").to_pylist()):
            if cid is not None:
                out[index] = cid
    return out


def build_dataset(seed_refs: pa.Table, config: PipelineConfig, taxonomy: Taxonomy, provenance: dict):
    """The run's Ray Dataset, and the WorkCounter actor its stages report to."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = config.ray.preserve_order
    ds = ray.data.from_arrow(_blocks(seed_refs))
    fault_spec = os.environ.get(faults.ENV)
    work = ray.remote(num_cpus=0)(WorkCounter).remote()
    for spec in stage_specs(config, taxonomy, provenance):
        res = spec.resources
        ds = ds.map_batches(
            named_actor_class(spec.name),
            fn_constructor_args=(spec.name, spec.factory, fault_spec, work),
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
    return ds, work


def read_work(work) -> dict[str, dict]:
    """What the stages counted, from the WorkCounter ``build_dataset`` made; the counter is then stopped."""
    import ray

    counts = ray.get(work.read.remote())
    ray.kill(work)
    return counts
