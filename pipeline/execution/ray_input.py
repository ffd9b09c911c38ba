"""The run's input on Ray: the listing as a Ray Data source, and a bound on how many seeds are in the graph at once.

Without the bound, Ray Data reads and ingests ahead of the slowest stage for as long as its object-store budget
allows, which for a million seeds is most of the input. Blocks under Ray's inline size (100 KB: listing slices,
planned sets, block metadata) are held in the driver's heap, not the object store, so the driver grew by 2-3 KB
for every set that waited in a queue. The bound admits a new input block only while the seeds read minus the
seeds whose rows the driver has taken stay within ``seeds_in_flight``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import pyarrow as pa

from pipeline.execution.ray_policies import add_policy
from pipeline.execution.stage_pools import pool_stage_names
from stages.base import Resources
from stages.sets.stage import SetPlanner

BLOCK_SEEDS = 32  # seeds per input block: fixed, so the first shard waits for a block, not a share of the input
READ_TASKS_AT_ONCE = 2  # slicing a block is a small task: two at a time keep an ingest pool fed (four were no faster)
RAY_DATA_TASKS_PER_ACTOR = 2  # Ray Data's default tasks in flight per actor (twice its max concurrency of 1)
# Seeds in flight per seed the actors hold. By Little's law the graph holds throughput x the time a block takes
# through it, and blocks wait between stages: on two shared cores (16 editors, 10k seeds) twice what the actors hold
# took 1.16x an unbounded run's time, eight times 1.01x (benchmarks/README.md)
HELD_TIMES = 8
WINDOW_KEY, ROWS_PER_SEED_KEY = "counterfactory.seeds_in_flight", "counterfactory.rows_per_seed"


def _read_block(listing, start: int, length: int) -> list[pa.Table]:
    import ray

    return [ray.get(listing).slice(start, length)]


def seed_source(seed_refs: pa.Table):
    """The listing as a Ray Data source of ``BLOCK_SEEDS``-seed blocks, sliced by read tasks from one copy in the
    object store as the graph asks for more. (``from_arrow`` first runs a metadata task per block: 14 s for the
    3,125 blocks of 100k seeds on two cores, before any row moves.)"""
    import ray
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class SeedRefSource(Datasource):
        def __init__(self, table: pa.Table):
            self.listing, self.rows, self.schema = ray.put(table), table.num_rows, table.schema
            self.row_bytes = table.nbytes / max(table.num_rows, 1)

        def estimate_inmemory_data_size(self) -> int:
            return int(self.rows * self.row_bytes)

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
            tasks = []
            for start in range(0, max(self.rows, 1), BLOCK_SEEDS):
                length = min(BLOCK_SEEDS, self.rows - start)
                metadata = BlockMetadata(num_rows=length, size_bytes=int(length * self.row_bytes), input_files=None,
                                         exec_stats=None)
                tasks.append(ReadTask(functools.partial(_read_block, self.listing, start, length), metadata,
                                      schema=self.schema))
            return tasks

    return SeedRefSource(seed_refs)


def seed_dataset(seed_refs: pa.Table, seeds_in_flight: int | None = None, rows_per_seed: int = 1):
    """The run's input dataset: one block per read task, a few read tasks at a time and little CPU for each.
    ``seeds_in_flight``: at most this many seeds between the input and the driver (None: no bound);
    ``rows_per_seed``: rows each seed becomes at the end of the graph (one set per axis)."""
    import ray.data

    blocks = max(-(-seed_refs.num_rows // BLOCK_SEEDS), 1)
    ds = ray.data.read_datasource(seed_source(seed_refs), override_num_blocks=blocks, num_cpus=0.05,
                                  concurrency=min(READ_TASKS_AT_ONCE, blocks))
    if seeds_in_flight is not None:
        bound_seeds_in_flight(ds.context, seeds_in_flight, rows_per_seed)
    return ds


def seeds_in_flight_for(pools: Sequence[tuple[str, Resources]], rows_per_seed: int,
                        planner: str = SetPlanner.name) -> int:
    """Enough seeds in the graph to keep every pool's actors busy while blocks wait between pools: ``HELD_TIMES``
    what the actors hold, in seeds (after the pool with ``planner`` a row is a set, ``rows_per_seed`` to a seed; a
    fused pool's name joins its stages' with "+"). A task is one batch where tasks are cut to batches, else whole
    blocks of at least ``BLOCK_SEEDS`` seeds, two in flight (Ray Data's default; a pool after a cut one gets smaller
    blocks, so this errs on the large side)."""
    held, sets = 0.0, False
    for name, res in pools:
        queued = res.batches_in_flight()
        batch = res.batch_size / (rows_per_seed if sets else 1)  # in seeds
        per_task = batch if queued is not None else max(batch, BLOCK_SEEDS)
        held += res.actors * per_task * (queued or RAY_DATA_TASKS_PER_ACTOR)
        sets = sets or planner in pool_stage_names(name)
    return max(4, -(-int(HELD_TIMES * held) // BLOCK_SEEDS)) * BLOCK_SEEDS


def bound_seeds_in_flight(context, seeds: int, rows_per_seed: int) -> None:
    """Install the bound on a Dataset's DataContext (the Datasets made from it share it) as one more of Ray Data's
    backpressure policies (the internals it uses: ray_seams, checked at start-up)."""
    add_policy(context, seeds_in_flight_policy, {WINDOW_KEY: int(seeds), ROWS_PER_SEED_KEY: max(int(rows_per_seed), 1)})


@functools.cache
def seeds_in_flight_policy() -> type:
    """The backpressure policy class (built on first use: Ray Data is imported only where a graph is built)."""
    from ray.data._internal.execution.backpressure_policy import BackpressurePolicy
    from ray.data._internal.execution.operators.input_data_buffer import InputDataBuffer

    class SeedsInFlight(BackpressurePolicy):
        """Holds back the input's read operator while the seeds read, less the seeds whose rows the driver has
        taken, would pass the bound. Two gates: no read task is started, and no read task's output taken in, past
        the bound (Ray Data starts a task of a held-back operator anyway when nothing at all runs). While a stage's
        actors are still starting, Ray Data's liveness rules may release a block past both; once they run, the
        bound holds. Any other operator is left to Ray Data's own policies."""

        def __init__(self, data_context, topology, resource_manager):
            super().__init__(data_context, topology, resource_manager)
            self.bound = data_context.get_config(WINDOW_KEY)
            self.rows_per_seed = data_context.get_config(ROWS_PER_SEED_KEY, 1)
            ops = list(topology)
            self.readers = [op for op in ops if op.input_dependencies
                            and all(isinstance(d, InputDataBuffer) for d in op.input_dependencies)]
            self.sink = ops[-1] if ops else None
            if not self.readers:
                self.bound = None  # a graph not read from a listing (the context is shared): not this bound's

        def _rows_to_driver(self) -> int:
            """Rows the driver has taken: out of the last operator, less those still queued for the driver there."""
            waiting = sum(q.num_rows() for q in self._topology[self.sink].output_queue._queues)
            return self.sink.metrics.row_outputs_taken - waiting

        def _fits(self, seeds: float) -> bool:
            in_flight = seeds - self._rows_to_driver() / self.rows_per_seed
            return in_flight <= 0 or in_flight + BLOCK_SEEDS <= self.bound

        def can_add_input(self, op) -> bool:
            if self.bound is None or op not in self.readers:
                return True
            return self._fits(sum(r.metrics.num_inputs_received for r in self.readers) * BLOCK_SEEDS)  # a block a task

        def max_task_output_bytes_to_read(self, op) -> int | None:
            if self.bound is None or op not in self.readers:
                return None
            return None if self._fits(sum(r.metrics.rows_task_outputs_generated for r in self.readers)) else 0

    return SeedsInFlight
