"""The Ray executor: the stage list as Ray Data actor pools with their declared resources (a stage a pool, or a
``ray.fuse`` group's in one: stage_pools). With ray_input (the input source and the bound on seeds in flight),
ray_output (batches out as they are done), ray_block_stats and ray_policies, the only modules that import
``ray.data``.

Each pool's stages are constructed and ``start()``-ed once per actor (stage_actor), then called on pyarrow
batches; what their counters gained per batch goes to a ``WorkCounter`` actor that the driver reads at the end.
The last stage encodes each set's files; the shard writer runs on the driver, assembling shards from rows in any order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Sequence

import pyarrow as pa

from pipeline.config.sections import PipelineConfig, RayConfig
from pipeline.execution.ray_seams import check_ray_seams
from pipeline.execution.seen_registry import SeenRegistry
from pipeline.execution.stage_actor import named_actor_class
from pipeline.execution.ray_block_stats import cap_block_stats
from pipeline.execution.ray_input import seed_dataset, seeds_in_flight_for
from pipeline.execution.ray_output import stream_batches
from pipeline.execution.stage_list import StageSpec, stage_specs
from pipeline.execution.stage_pools import StagePool, stage_pools
from pipeline.execution.work_counter import WorkCounter
from schemas.taxonomy import Taxonomy
from stages.base import Resources
from stages.utils import faults

def init_ray(config: RayConfig):
    import ray

    check_ray_seams()
    quiet_ray_data(config)
    if ray.is_initialized():
        return ray
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        # On a cluster the job's runtime env (configs/runtime_env.yaml) sets the workers' environment;
        # a second runtime env from the driver would conflict with it.
        ray.init(address=address, log_to_driver=True, logging_level=_log_level(config))
    else:
        _local_token_auth()
        # A Ray of this run's own ("local": not one a `ray start` left running here, which ray.init would otherwise
        # join), so its processes inherit this one's environment (offline Hub access, object-store endpoints and
        # credentials): no runtime env, which would keep the workers Ray starts in advance from being used.
        with _environment({} if _verbose(config) else QUIET_WORKER_ENV):
            ray.init(address="local", num_cpus=config.num_cpus, num_gpus=config.num_gpus, include_dashboard=False,
                     logging_level=_log_level(config))
    return ray


@contextlib.contextmanager
def _environment(defaults: dict[str, str]):
    """``defaults`` in the environment, where not set already, while the block runs."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _local_token_auth() -> None:
    """Token authentication for the local Ray a run starts, chosen explicitly: it is Ray's default, but left to
    the default Ray announces it with a WARNING. A RAY_AUTH_MODE the user set wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # a Ray without token authentication
        return
    _enable_token_auth()


def _verbose(config: RayConfig) -> bool:
    return config.progress_bars if config.progress_bars is not None else sys.stderr.isatty()


def _log_level(config: RayConfig) -> int:
    return logging.INFO if _verbose(config) else logging.WARNING


# A quiet run's workers: no model-loading progress bars or library deprecation notes in the job's log.
QUIET_WORKER_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
                    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}


class _NoProgressNotes(logging.Filter):
    """Ray Data's notes about its own progress display; its warnings (resources, hangs) still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "rogress" not in record.getMessage()


def quiet_ray_data(config: RayConfig) -> None:
    """Ray Data's progress bars, execution plans and stats logs only when verbose (on a terminal, or asked for):
    elsewhere the project's own progress line says how the run goes."""
    import ray.data

    show = _verbose(config)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.enable_operator_progress_bars = show
    context.print_on_execution_start = context.enable_auto_log_stats = show
    detectors = getattr(context, "issue_detectors_config", None)
    if detectors is not None and config.progress_bars is not True:  # even on a terminal, unless --verbose:
        # its advice (pass `memory=` to map_batches) is for Ray Data's callers, not for this project's users.
        detectors.high_memory_detector_config.detection_time_interval_s = -1
    # Said of the block-splitting operator on a small input (fewer blocks than its two tasks): nothing to act on.
    warnings.filterwarnings("ignore", message=".*maximum number of concurrent tasks.*only received")
    logging.getLogger("ray.data").setLevel(logging.INFO if show else logging.WARNING)
    if not show:
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        # A logger's filters see only its own records, not its children's: the progress notes come from this one.
        for logger in map(logging.getLogger, ("ray.data", "ray.data._internal.progress")):
            if not any(isinstance(f, _NoProgressNotes) for f in logger.filters):
                logger.addFilter(_NoProgressNotes())


class RegistryProxy:
    """The run's SeenRegistry actor, called as the plain class is: ingest claims, the driver's assembler asks."""

    def __init__(self, handle):
        self.handle = handle

    def claim(self, claims):
        import ray

        return ray.get(self.handle.claim.remote(claims))

    def watermark(self):
        import ray

        return ray.get(self.handle.watermark.remote())

    def decide(self, seeds):
        import ray

        return ray.get(self.handle.decide.remote(seeds))


def start_registry(todo: Sequence[int], seen_content: dict[str, int], seen_seed_ids: dict[str, int],
                   dedupe: bool = True) -> RegistryProxy:
    """The run's shared record of seeds seen (no CPU reserved: it only keeps dictionaries), from the completed
    shards' content ids (when dedupe is on) and seed ids."""
    import ray

    actor = ray.remote(num_cpus=0, scheduling_strategy=on_the_driver_node())(SeenRegistry)
    return RegistryProxy(actor.remote(todo, seen_content if dedupe else {}, seen_seed_ids))


def on_the_driver_node():
    """Where the run's bookkeeping actors (the record of seeds seen, the work counter) go: their state is not
    rebuilt by a restart, so not on a worker node a cluster may lose (the stages' actors are restarted elsewhere),
    but on the driver's, whose loss ends the run anyway."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def build_dataset(seed_refs: pa.Table, config: PipelineConfig, taxonomy: Taxonomy, provenance: dict,
                  registry: RegistryProxy | None = None):
    """The run's Ray Dataset, and the WorkCounter actor its stages report to. Rows come out in whatever order
    they finish (the assembler does not need seed order), unless ``ray.preserve_order``; read them with
    ``ray_output.batches_as_done``."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = config.ray.preserve_order
    specs = stage_specs(config, taxonomy, provenance, registry.claim if registry is not None else None)
    pools = stage_pools(specs, config.ray.fuse)
    rows_per_seed = len(config.plan.axes)
    bound = config.ray.seeds_in_flight or seeds_in_flight_for([(p.name, p.resources) for p in pools], rows_per_seed)
    ds = seed_dataset(seed_refs, bound, rows_per_seed)
    cap_block_stats(ds.context)
    fault_spec = os.environ.get(faults.ENV)
    work = ray.remote(num_cpus=0, scheduling_strategy=on_the_driver_node())(WorkCounter).remote()
    for pool in pools:
        ds = map_pool(ds, pool, fault_spec, work)
    return ds, work


SPLIT_CPUS = 0.05  # a block-splitting task only slices Arrow tables...
SPLIT_TASKS_AT_ONCE = 2  # ...and two at a time keep up; at a twentieth of a CPU each Ray would start a worker
# process for every one it could fit (64 idle editors on two cores measured 0.37 of ideal that way)


def blocks_of(ds, rows: int):
    """``ds`` with its blocks cut to at most ``rows`` rows. A Ray Data task hands an actor whole upstream blocks
    (32 seeds or more), whatever the stage's batch size. ``Dataset.repartition(target_num_rows_per_block=)`` does
    the cutting, but its tasks ask for a whole CPU (and fuse only into a task-pool stage): with actor pools
    holding fractions of two cores that waits for ever. The same operator, asking for a sliver of a CPU."""
    from ray.data import Dataset, TaskPoolStrategy
    from ray.data._internal.logical.interfaces import LogicalPlan  # (these: ray_seams checks at start-up)
    from ray.data._internal.logical.operators.map_operator import StreamingRepartition

    op = StreamingRepartition(target_num_rows_per_block=rows, input_dependencies=[ds._logical_plan.dag],
                              ray_remote_args={"num_cpus": SPLIT_CPUS}, compute=TaskPoolStrategy(size=SPLIT_TASKS_AT_ONCE))
    return Dataset._from_parent(ds, LogicalPlan(op, ds.context))


def map_stage(ds, name: str, factory, res: Resources, fault_spec: str | None = None, work=None):
    """``ds`` through one stage, built by ``factory``, in a pool of its own."""
    return map_pool(ds, StagePool([StageSpec(name, factory, res)], res), fault_spec, work)


def map_pool(ds, pool: StagePool, fault_spec: str | None = None, work=None):
    """``ds`` through a pool's stages: an actor pool of ``res.actors`` actors, each building the stages once; each
    batch it finishes goes on as a block of its own."""
    from ray.data import ActorPoolStrategy

    res = pool.resources
    stream_batches(ds.context)
    queued = res.batches_in_flight()
    if queued is not None:
        ds = blocks_of(ds, res.batch_size)  # so that the queue bound counts batches
    return ds.map_batches(
        named_actor_class([spec.name for spec in pool.stages]),
        fn_constructor_args=([(spec.name, spec.factory, spec.resources.batch_size) for spec in pool.stages],
                             fault_spec, work),
        batch_format="pyarrow",
        batch_size=res.batch_size,
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus if res.num_gpus > 0 else None,
        compute=ActorPoolStrategy(size=res.actors, max_tasks_in_flight_per_actor=queued),
        # A dead actor is restarted (max_restarts times) and its batches retried; rows reach the writer once
        # either way, since the driver writes only what the graph yields. Retries are not counted on their own:
        # while a lost node's actors await their restart elsewhere, each retry fails at once ("actor temporarily
        # unavailable") and a few would be spent in milliseconds, failing the run; the restarts bound them.
        max_restarts=res.max_restarts,
        max_task_retries=-1 if res.max_restarts > 0 else 0,
    )


def read_work(work) -> dict[str, dict]:
    """What the stages counted, from the WorkCounter ``build_dataset`` made; the counter is then stopped."""
    import ray

    counts = ray.get(work.read.remote())
    ray.kill(work)
    return counts
