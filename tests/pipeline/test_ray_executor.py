"""The Ray graph's plumbing: the input source and how work reaches a stage's actors."""

from __future__ import annotations

import functools
import os
import pickle
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from stages.base import Resources, Stage
from stages.ingest.listed import ListedSeeds, seed_ref_table

REPO = Path(__file__).resolve().parents[2]


def listing(count: int) -> pa.Table:
    listed = ListedSeeds()
    for i in range(count):
        listed.add(f"s3://bucket/{i:03d}.jpg", concept="chef" if i % 2 else None)
    return seed_ref_table(listed.table(), 4)


def rows_of(dataset) -> list[dict]:
    import ray

    return [row for ref in dataset.to_arrow_refs() for row in ray.get(ref).to_pylist()]


def test_the_default_bound_is_a_multiple_of_what_every_stage_holds():
    """Ray Data's defaults hand a CPU actor whole blocks (32 seeds or more), two at a time; a GPU stage's tasks are one
    batch, one at a time; after the planner a row is a set, ``rows_per_seed`` to a seed. Counted in input blocks."""
    from pipeline.execution.ray_input import HELD_TIMES, seeds_in_flight_for

    cpu = Resources(num_cpus=1, actors=2, batch_size=8)  # 2 actors x 32 seeds x 2 tasks = 128 seeds
    gpu = Resources(num_gpus=1, actors=64, batch_size=2)  # 64 x 2 sets x 1 task = 128 sets: 32 seeds of 4 sets
    wide = Resources(num_cpus=1, actors=2, batch_size=256)  # after the planner: 64 seeds a batch, 2 x 64 x 2 = 256
    stages = [("ingest", cpu), ("sets", cpu), ("edit", gpu), ("encode", cpu), ("export", wide)]
    assert seeds_in_flight_for(stages, rows_per_seed=4) == HELD_TIMES * (128 + 128 + 32 + 128 + 256)
    assert seeds_in_flight_for([("edit", Resources(num_gpus=1, batch_size=1))], 1) == 4 * 32  # never below 4 blocks


@pytest.mark.parametrize("count", [0, 1, 32, 33])
def test_the_input_source_hands_over_every_listed_seed_once(local_ray, count):
    """The run's input on Ray: read tasks slicing the one copy of the listing give back the listing, row for row."""
    from pipeline.execution.ray_input import seed_dataset

    table = listing(count)
    assert sorted(rows_of(seed_dataset(table)), key=lambda r: r["seed_index"]) == table.to_pylist()


class PassThrough(Stage):
    """Passes rows through, noting the process that handled each; with ``slow_marker``, the actors after the
    first (the one that claims the marker) take ``slow_seconds`` a batch."""

    output_schema = pa.schema([("seed_index", pa.int64()), ("worker", pa.int64())])

    def __init__(self, slow_marker: str | None = None, slow_seconds: float = 0.0):
        super().__init__()
        self.seconds = 0.0
        if slow_marker is not None:
            try:
                os.close(os.open(slow_marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                self.seconds = slow_seconds

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(self.seconds)
        return pa.table({"seed_index": batch["seed_index"], "worker": [os.getpid()] * batch.num_rows},
                        schema=self.output_schema)


def test_a_slow_gpu_actor_holds_one_batch_not_a_block(local_ray, tmp_path):
    """Ray Data hands an actor whole upstream blocks (32 seeds here), whatever the batch size, and queues two per
    actor. A GPU stage's work is cut to one batch a task, queued one at a time: while one of two GPU actors takes
    5 s a batch, the other edits everything else."""
    from pipeline.execution.ray_executor import map_stage
    from pipeline.execution.ray_input import seed_dataset

    upstream = map_stage(seed_dataset(listing(96)), "ingest", PassThrough, Resources(num_cpus=0.1, batch_size=16))
    slow = functools.partial(PassThrough, str(tmp_path / "slow"), 5.0)
    gpu = Resources(num_cpus=0.1, num_gpus=0.5, actors=2, batch_size=2)
    rows = rows_of(map_stage(upstream, "edit", slow, gpu))
    assert sorted(row["seed_index"] for row in rows) == list(range(96))
    by_worker = sorted(Counter(row["worker"] for row in rows).values())
    assert len(by_worker) == 2 and by_worker[0] <= 3 * gpu.batch_size  # a block would have been 32


class Stamped(Stage):
    """Notes when each row passed; with ``seconds``, takes that long a batch (the slow stage of a run). ``marks``: a
    file it makes once built; ``waits_for``: a file it waits for before its first batch (so that the fast stage
    starts once the slow one is up, as it does in a run whose actors have all started)."""

    def __init__(self, column: str, seconds: float = 0.0, marks: str | None = None, waits_for: str | None = None):
        super().__init__()
        self.column, self.seconds, self.waits_for = column, seconds, waits_for
        self.output_schema = None
        if marks is not None:
            open(marks, "w").close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        while self.waits_for is not None and not os.path.exists(self.waits_for):
            time.sleep(0.05)
        time.sleep(self.seconds)
        return batch.append_column(self.column, pa.array([time.time()] * batch.num_rows, pa.float64()))


def most_ahead(rows: list[dict]) -> int:
    """The most seeds ever ingested and not yet through the slow stage."""
    ingested = sorted(row["ingested_at"] for row in rows)
    edited = sorted(row["edited_at"] for row in rows)
    ahead, k = 0, 0
    for i, at in enumerate(ingested):  # at each ingest: how many were ingested by then and not yet edited
        while k < len(edited) and edited[k] <= at:
            k += 1
        ahead = max(ahead, i + 1 - k)
    return ahead


def test_each_batch_reaches_the_driver_as_soon_as_it_is_done(local_ray):
    """A CPU stage's task takes a whole 32-seed input block, but hands on each batch as a block of its own, and the
    driver has each block as soon as it is out: the first batch's rows are in hand before the second batch is done.
    (Before, the stage's four batches came out as one block when the task ended, and Ray Data's local prefetch kept
    each block from the driver until the next one was out.)"""
    from pipeline.execution.ray_executor import map_stage
    from pipeline.execution.ray_input import seed_dataset
    from pipeline.execution.ray_output import batches_as_done

    ds = map_stage(seed_dataset(listing(32)), "edit", functools.partial(Stamped, "edited_at", 1.5),
                   Resources(num_cpus=0.1, batch_size=8))
    arrived = [(time.time(), batch) for batch in batches_as_done(ds)]
    assert [batch.num_rows for _, batch in arrived] == [8, 8, 8, 8]
    done = sorted(batch["edited_at"][0].as_py() for _, batch in arrived)  # when each batch was done
    assert arrived[0][0] < done[1]


class ThreadNoted(Stage):
    """Notes whether each batch runs on the thread its setup ran on."""

    def __init__(self):
        super().__init__()
        self.output_schema = None

    def setup(self) -> None:
        self.setup_thread = threading.get_ident()

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.start()
        same = threading.get_ident() == self.setup_thread
        return batch.append_column("on_setup_thread", pa.array([same] * batch.num_rows))


def test_a_stage_runs_its_batches_on_the_thread_that_set_it_up(local_ray):
    """Ray Data calls an actor from a pool thread, not the one that built it, and PyTorch keeps OpenMP's thread
    count and team per calling thread: an editor loaded on one thread and called on another computed at half
    speed or worse (the mini config's editor: 125 s of a 178 s run, 86 s once on one thread)."""
    from pipeline.execution.ray_executor import map_stage
    from pipeline.execution.ray_input import seed_dataset

    rows = rows_of(map_stage(seed_dataset(listing(8)), "edit", ThreadNoted, Resources(num_cpus=0.1, batch_size=4)))
    assert [row["on_setup_thread"] for row in rows] == [True] * 8


class Noted(Stage):
    """Adds a column with its process id; counts its batches."""

    def __init__(self, column: str):
        super().__init__()
        self.column, self.output_schema = column, None

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.counters["rows"] += batch.num_rows
        self.counters["batches"] += 1
        return batch.append_column(self.column, pa.array([os.getpid()] * batch.num_rows, pa.int64()))


def test_a_fused_group_asks_for_the_most_any_of_its_stages_asks_for():
    from pipeline.execution.stage_list import StageSpec
    from pipeline.execution.stage_pools import fused_resources, stage_pools

    # CPUs the most (2), GPU fractions added (0.5 + 0.25), actors the GPU stages' most (4, not ingest's 8),
    # the first stage's batches (8), restarts the most (5), queued the fewest (the GPU editor's 1, not filter's 2)
    sets = Resources(num_cpus=0.2, actors=8, batch_size=8, tasks_in_flight=4)
    edit = Resources(num_cpus=1, num_gpus=0.5, actors=4, batch_size=2, max_restarts=3)
    filter_ = Resources(num_cpus=2, num_gpus=0.25, actors=2, batch_size=16, max_restarts=5, tasks_in_flight=2)
    assert fused_resources([sets, edit, filter_]) == Resources(num_cpus=2, num_gpus=0.75, actors=4, batch_size=8,
                                                               max_restarts=5, tasks_in_flight=1)
    # 0.5 + 0.75 is over one device, and every model loads on the actor's first: one GPU; a 2-GPU editor keeps its 2
    assert fused_resources([edit, Resources(num_gpus=0.75)]).num_gpus == 1
    assert fused_resources([Resources(num_gpus=2), filter_]).num_gpus == 2
    assert fused_resources([sets, Resources(actors=3)]) == Resources(num_cpus=1, actors=8, batch_size=8,
                                                                     tasks_in_flight=4)  # CPU only: the most actors
    specs = [StageSpec(name, Noted, Resources()) for name in ("ingest", "caption", "sets", "edit", "filter")]
    pools = stage_pools(specs, [["caption", "sets"], ["edit", "filter"]])
    assert [pool.name for pool in pools] == ["ingest", "caption+sets", "edit+filter"]


@pytest.mark.parametrize("crash", [False, True], ids=["whole", "second-stage-crashes-once"])
def test_a_fused_group_runs_its_stages_in_one_actor_in_order_and_counts_each(local_ray, tmp_path, crash):
    """Two stages fused: every batch goes through both in the same process, the first stage's output into the
    second in the second's own batches, and the work counter has each stage's own counts: 24 seeds in the pool's
    batches of 8 (3 for the first stage), each cut into the second's batches of 3 (3 x 3 = 9). When the second
    stage's actor dies on its first batch, the restarted actor redoes that batch and nothing is counted twice."""
    import ray

    from pipeline.execution.ray_executor import map_pool, read_work
    from pipeline.execution.ray_input import seed_dataset
    from pipeline.execution.stage_list import StageSpec
    from pipeline.execution.stage_pools import StagePool
    from pipeline.execution.work_counter import WorkCounter

    res = Resources(num_cpus=0.1, batch_size=8)
    pool = StagePool([StageSpec("ingest", functools.partial(Noted, "ingest_pid"), res),
                      StageSpec("sets", functools.partial(Noted, "sets_pid"), Resources(num_cpus=0.1, batch_size=3))],
                     res)
    marker = tmp_path / "crashed"
    work = ray.remote(num_cpus=0)(WorkCounter).remote()
    rows = rows_of(map_pool(seed_dataset(listing(24)), pool, f"crash:sets:{marker}" if crash else None, work))
    assert sorted(row["seed_index"] for row in rows) == list(range(24))
    assert list(rows[0])[-2:] == ["ingest_pid", "sets_pid"]
    assert all(row["ingest_pid"] == row["sets_pid"] != os.getpid() for row in rows)
    assert len({row["sets_pid"] for row in rows}) == 1  # one actor (a crashed one's rows are redone by its restart)
    assert marker.exists() == crash
    assert read_work(work) == {"ingest": {"batches": 3, "rows": 24}, "sets": {"batches": 9, "rows": 24}}


@pytest.fixture(scope="module", params=[64, None], ids=["bounded", "unbounded"])
def graph_run(request, local_ray, tmp_path_factory):
    """A fast ingest before a slow stage, with the driver's memory held as a run holds it (``seeds_in_flight`` 64,
    the stats of 2 recent blocks kept per operator) or as Ray Data goes; its rows, and Ray Data's stats summary."""
    from pipeline.execution.ray_block_stats import cap_block_stats
    from pipeline.execution.ray_executor import map_stage
    from pipeline.execution.ray_input import seed_dataset

    bound = request.param
    up = str(tmp_path_factory.mktemp("graph-run") / "slow-stage-up")
    ds = seed_dataset(listing(320), bound)
    if bound is not None:
        cap_block_stats(ds.context, keep=2)
    ds = map_stage(ds, "ingest", functools.partial(Stamped, "ingested_at", waits_for=up),
                   Resources(num_cpus=0.1, batch_size=32))
    ds = map_stage(ds, "edit", functools.partial(Stamped, "edited_at", 0.1, marks=up),
                   Resources(num_cpus=0.1, batch_size=8))
    rows = [row for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None) for row in batch.to_pylist()]
    return bound, rows, ds.stats()


def test_the_input_is_read_only_as_far_ahead_as_the_bound(graph_run):
    """With ``seeds_in_flight`` the seeds ingested and not yet through the slow stage stay within the bound;
    without it, ingest runs most of the input ahead, and each block that waits (under Ray's 100 KB inline size) is
    held in the driver's memory."""
    from pipeline.execution.ray_input import BLOCK_SEEDS

    bound, rows, _ = graph_run
    assert sorted(row["seed_index"] for row in rows) == list(range(320))
    if bound is not None:
        # a block is taken in only while it fits; while the slow actor's readiness is not yet known, Ray Data's
        # liveness rules may let one more in
        assert most_ahead(rows) <= bound + BLOCK_SEEDS
    else:
        assert most_ahead(rows) > 160


def test_the_driver_keeps_the_stats_of_recent_blocks_only(graph_run):
    """Ray Data keeps every block's stats on the driver for the life of a run (0.28 blocks a set in the scale
    benchmark); capped, each operator keeps its last few, and Ray Data's own summary still comes out, over those."""
    bound, rows, summary = graph_run
    produced = {name: int(blocks) for name, blocks in
                re.findall(r"Operator \d+ (.+?): \d+ tasks executed, (\d+) blocks produced", summary)}
    edit = next(blocks for name, blocks in produced.items() if "EditStage" in name)
    assert len(rows) == 320 and len(produced) >= 2, summary
    if bound is not None:
        assert max(produced.values()) <= 2 * 2, summary  # trimmed to 2 once past 4
    else:
        assert edit >= 320 // 32, summary  # a block for each input block at least


@pytest.mark.parametrize("override", [64, None])
def test_a_run_s_dataset_carries_its_bound_and_the_block_stats_cap(local_ray, override):
    """What ``build_dataset`` installs for a run: the configured ``ray.seeds_in_flight`` (or the default from its
    stages), rows per seed from its axes (one set each), and the cap on kept block stats."""
    from pipeline.config.loading import load_config
    from pipeline.execution.provenance import provenance
    from pipeline.execution.ray_block_stats import capped_block_stats_policy
    from pipeline.execution.ray_executor import build_dataset, read_work
    from pipeline.execution.ray_input import ROWS_PER_SEED_KEY, WINDOW_KEY, seeds_in_flight_policy

    loaded = load_config(REPO / "configs" / "mini.yaml", {"ray.seeds_in_flight": override})
    ds, work = build_dataset(listing(8), loaded.config, loaded.taxonomy, provenance(loaded))
    read_work(work)
    policies = ds.context.get_config("backpressure_policies.enabled")
    assert seeds_in_flight_policy() in policies and capped_block_stats_policy() in policies
    assert ds.context.get_config(ROWS_PER_SEED_KEY) == len(loaded.config.plan.axes) == 2
    if override is None:
        # mini.yaml's default, by hand: its 7 stages fused into 2 pools (ingest+caption+concept, sets+edit+filter+
        # encode), each one CPU actor with Ray Data's default tasks: whole input blocks of 32 seeds (each pool's
        # batch is smaller: 8 seeds), 2 tasks in flight per actor (RAY_DATA_TASKS_PER_ACTOR).
        # 2 x 1 x 32 x 2 = 128 seeds held; HELD_TIMES 8 x 128 = 1,024 seeds = 32 blocks of 32.
        assert ds.context.get_config(WINDOW_KEY) == 1024
    else:
        assert ds.context.get_config(WINDOW_KEY) == 64


def test_recent_block_stats_keep_the_newest_and_trim_in_slices():
    """The list Ray Data appends to: never over twice ``keep``, the newest kept in order, at least ``keep``; it
    pickles as a plain list (Ray Data's stats actor, shared by other jobs, needs none of this project)."""
    from pipeline.execution.ray_block_stats import RecentBlockStats

    kept = RecentBlockStats(keep=10)
    for i in range(95):
        kept.append(i)
        assert len(kept) <= 20
    kept.extend(range(95, 103))
    assert kept[-1] == 102 and kept == list(range(103 - len(kept), 103)) and 10 <= len(kept) <= 20
    again = pickle.loads(pickle.dumps(kept))
    assert type(again) is list and again == kept
